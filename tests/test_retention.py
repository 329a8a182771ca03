"""Retention against a real database: finished tasks (with attempts and stored output) and
ticks older than the cutoff go in small batches, newer and unfinished rows stay, ticks keep
their schedule's newest N, claims are never blocked by a pruner, and coordinators prune by
themselves; workers prune their old output files."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from common.config import ConfigError, parse_duration
from coordinator_svc import config as coordinator_config
from coordinator_svc.config import RetentionSettings
from coordinator_svc.retention import SCHEDULES_PER_PASS, Pruner
from coordinator_svc.retention import PassResult as PruneResult
from devtools.cluster import wait_for
from store import dispatch, retention
from store.db import make_pool
from worker_svc import config as worker_config
from worker_svc.output import prune_output_files

from .test_e2e import submit, wait_finished

Db = psycopg.Connection[Any]
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=7)


def run(url: str, work: Any) -> Any:
    async def go() -> Any:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await work(conn)

    return asyncio.run(go())


def add_task(db: Db, status: str, completed_at: datetime | None, **extra: Any) -> uuid.UUID:
    task_id = uuid.uuid4()
    done = status in ("succeeded", "failed", "cancelled")
    db.execute(
        "INSERT INTO tasks (id, command, status, run_at, scheduled_at, completed_at, failed_at,"
        " cancelled_at, schedule_id, fire_time)"
        " VALUES (%s, 'true', %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            task_id,
            status,
            extra.get("fire_time") or (completed_at or NOW) - timedelta(days=1),
            extra.get("fire_time") or (completed_at or NOW) - timedelta(days=1),
            completed_at if done else None,
            completed_at if status == "failed" else None,
            completed_at if status == "cancelled" else None,
            extra.get("schedule_id"),
            extra.get("fire_time"),
        ),
    )
    return task_id


def add_attempt_with_output(db: Db, task_id: uuid.UUID, at: datetime) -> None:
    db.execute(
        "INSERT INTO workers (id, address, slots, last_heartbeat_at) VALUES ('w', 'a:1', 4, %s)"
        " ON CONFLICT (id) DO NOTHING",
        (at,),
    )
    db.execute(
        "UPDATE tasks SET attempt = 1, worker_id = 'w', picked_at = %s, started_at = %s,"
        " exit_code = 0 WHERE id = %s",
        (at, at, task_id),
    )
    db.execute(
        "INSERT INTO attempts (task_id, attempt, worker_id, status, picked_at, started_at,"
        " ended_at, exit_code) VALUES (%s, 1, 'w', 'succeeded', %s, %s, %s, 0)",
        (task_id, at, at, at),
    )
    db.execute(
        "INSERT INTO attempt_outputs (task_id, attempt, head, tail, tail_offset, size, updated_at)"
        " VALUES (%s, 1, 'hello', '', 5, 5, %s)",
        (task_id, at),
    )


def count(db: Db, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def ids(db: Db) -> set[uuid.UUID]:
    return {row[0] for row in db.execute("SELECT id FROM tasks").fetchall()}


def test_durations_parse_with_units():
    assert parse_duration("90", "--x") == 90
    assert parse_duration("15m", "--x") == 900
    assert parse_duration("7d", "--x") == 7 * 86400
    with pytest.raises(ConfigError, match="--x"):
        parse_duration("soon", "--x")


def test_retention_flags():
    config = coordinator_config.load([], {})
    assert config.retention.age == 7 * 86400 and config.retention.keep_ticks == 100
    config = coordinator_config.load(["--retention=off"], {})
    assert config.retention.age is None
    config = coordinator_config.load(["--retention=90s", "--keep-ticks=5"], {})
    assert (config.retention.age, config.retention.keep_ticks) == (90, 5)
    with pytest.raises(ConfigError, match="--retention"):
        coordinator_config.load(["--retention=0"], {})
    assert worker_config.load([], {}).output_retention == 7 * 86400
    assert worker_config.load(["--output-retention=off"], {}).output_retention is None


def test_old_finished_tasks_go_with_attempts_and_output_newer_and_unfinished_stay(
    db, database_url
):
    old = [add_task(db, s, CUTOFF - timedelta(hours=1)) for s in ("succeeded", "failed")]
    old.append(add_task(db, "cancelled", CUTOFF - timedelta(days=30)))
    add_attempt_with_output(db, old[0], CUTOFF - timedelta(hours=2))
    newer = add_task(db, "succeeded", CUTOFF + timedelta(seconds=1))
    add_attempt_with_output(db, newer, CUTOFF + timedelta(seconds=1))
    # Unfinished tasks stay whatever their age.
    queued = add_task(db, "queued", None)
    nine_days = CUTOFF - timedelta(days=9)
    db.execute(
        "UPDATE tasks SET run_at = %s, scheduled_at = %s WHERE id = %s",
        (nine_days, nine_days, queued),
    )
    assert count(db, "attempt_outputs") == 2

    # Small batches: two rows per statement.
    deleted = [run(database_url, lambda c: retention.prune_tasks(c, CUTOFF, 2)) for _ in range(3)]
    assert deleted == [2, 1, 0]
    assert ids(db) == {newer, queued}
    assert count(db, "attempts") == 1 and count(db, "attempt_outputs") == 1


def add_schedule(db: Db) -> uuid.UUID:
    schedule_id = uuid.uuid4()
    db.execute(
        "INSERT INTO schedules (id, name, cron, timezone, command, next_fire_at, anchor_at,"
        " active_from, created_at, updated_at)"
        " VALUES (%(id)s, %(name)s, '* * * * *', 'UTC', 'true',"
        " %(now)s, %(t)s, %(t)s, %(t)s, %(t)s)",
        {"id": schedule_id, "name": f"s-{schedule_id}", "now": NOW, "t": NOW - timedelta(days=60)},
    )
    return schedule_id


def add_ticks(db: Db, schedule_id: uuid.UUID, fires: list[datetime]) -> list[uuid.UUID]:
    """A started tick (with its finished run) per fire time."""
    runs = []
    for fire in fires:
        task_id = add_task(db, "succeeded", fire, schedule_id=schedule_id, fire_time=fire)
        db.execute(
            "INSERT INTO schedule_ticks (schedule_id, fire_time, outcome, task_id, recorded_at)"
            " VALUES (%s, %s, 'started', %s, %s)",
            (schedule_id, fire, task_id, fire),
        )
        runs.append(task_id)
    return runs


def test_old_ticks_go_beyond_each_schedules_newest_n_and_their_runs_after_them(
    db, database_url
):
    busy, rare = add_schedule(db), add_schedule(db)
    hourly = [CUTOFF - timedelta(hours=h) for h in range(10, 0, -1)]  # ten old ticks
    recent = [CUTOFF + timedelta(hours=h) for h in range(1, 4)]  # three new ones
    busy_runs = add_ticks(db, busy, hourly + recent)
    rare_runs = add_ticks(db, rare, hourly[-2:])  # two old ticks: within its newest 4

    # A run that a kept tick names is kept with it.
    assert run(database_url, lambda c: retention.prune_tasks(c, CUTOFF, 100)) == 0

    async def prune(conn: Any) -> int:
        return await retention.prune_ticks(conn, [busy, rare], CUTOFF, 4, 3)

    deleted = [run(database_url, prune) for _ in range(4)]
    # Busy: its newest 4 are the three recent ticks and the newest old one, so nine old ticks
    # go, three a schedule per statement; rare keeps both of its ticks.
    assert deleted == [3, 3, 3, 0]
    kept = db.execute(
        "SELECT schedule_id, fire_time FROM schedule_ticks ORDER BY schedule_id, fire_time"
    ).fetchall()
    assert sorted(kept) == sorted(
        [(busy, f) for f in hourly[-1:] + recent] + [(rare, f) for f in hourly[-2:]]
    )
    # Now the runs of the deleted ticks are free to go.
    assert run(database_url, lambda c: retention.prune_tasks(c, CUTOFF, 100)) == 9
    assert ids(db) == set(busy_runs[-4:] + rare_runs)


def test_schedules_are_visited_a_page_at_a_time(db, database_url):
    made = sorted(add_schedule(db) for _ in range(3))
    first = run(database_url, lambda c: retention.next_schedules(c, uuid.UUID(int=0), 2))
    assert first == made[:2]
    assert run(database_url, lambda c: retention.next_schedules(c, first[-1], 2)) == made[2:]


def test_a_pruner_holding_its_batch_never_blocks_a_claim(db, database_url):
    """The pruner's batch stays locked (its transaction open) while another connection claims:
    the claim goes through at once, under a lock timeout that would fail it otherwise."""
    for _ in range(50):
        add_task(db, "succeeded", CUTOFF - timedelta(days=1))
    due = [add_task(db, "queued", None) for _ in range(3)]
    db.execute(
        "INSERT INTO workers (id, address, slots, last_heartbeat_at) VALUES ('w1', 'a:1', 8, now())"
    )
    holding, release = threading.Event(), threading.Event()

    def pruner() -> None:
        with psycopg.connect(database_url) as conn:
            cur = conn.execute(
                retention.PRUNE_TASKS.replace("%(cutoff)s", "%s").replace("%(limit)s", "%s"),
                (CUTOFF, 1000),
            )
            assert cur.rowcount == 50
            holding.set()
            release.wait(30)
            conn.rollback()

    thread = threading.Thread(target=pruner)
    thread.start()
    try:
        assert holding.wait(30)

        async def claim(conn: Any) -> Any:
            await conn.execute("SET lock_timeout = '2s'")
            return await dispatch.claim_for_free_slots(conn, 60.0, 0)

        claimed = run(database_url, claim)  # a wait on the pruner's locks would time out
        assert {a.task_id for a in claimed.attempts} == set(due)
        # A second pruner skips the held rows instead of waiting for them.
        assert run(database_url, lambda c: retention.prune_tasks(c, CUTOFF, 1000)) == 0
    finally:
        release.set()
        thread.join()


def test_a_coordinator_prunes_by_itself(cluster_factory):
    cluster = cluster_factory(workers=1, start=False)
    cluster.start_coordinator(extra_args=["--retention=2s", "--prune-interval=0.2"])
    cluster.start_scheduler()
    cluster.start_worker("worker-1")
    done = [submit(cluster, "echo bye") for _ in range(3)]
    wait_finished(cluster, done)
    later = submit(cluster, "true", delay_seconds=3600)  # queued: never pruned

    def gone() -> bool:
        with psycopg.connect(cluster.database_url, autocommit=True) as conn:
            left = {str(r[0]) for r in conn.execute("SELECT id FROM tasks").fetchall()}
            outputs = conn.execute("SELECT count(*) FROM attempt_outputs").fetchone()
        return left == {later} and outputs is not None and outputs[0] == 0

    wait_for(gone, 30, message=lambda: f"finished tasks to be pruned\n{cluster.logs()}")
    assert cluster.http.get(f"/tasks/{done[0]}").status_code == 404


def test_workers_prune_output_files_older_than_their_setting(tmp_path: Path):
    old, new, held = (tmp_path / name for name in ("old.log", "new.log", "held.log"))
    for path in (old, new, held):
        path.write_text("output")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    os.utime(held, (an_hour_ago, an_hour_ago))
    (tmp_path / "sub").mkdir()
    removed = prune_output_files(tmp_path, max_age=600, keep={held})
    assert removed == 1
    assert {p.name for p in tmp_path.iterdir()} == {"new.log", "held.log", "sub"}


def test_a_pruner_works_through_every_schedule_in_small_batches(db, database_url):
    """More schedules than one pass looks at, each with old ticks: passes go on while there is
    work or schedules left, each deleting a batch at most, until only each schedule's newest
    tick is left; the runs of the last ticks go in the pass after the interval."""
    old = [datetime.now(UTC) - timedelta(days=9, hours=h) for h in range(3, 0, -1)]
    made = [add_schedule(db) for _ in range(SCHEDULES_PER_PASS + 20)]
    for schedule_id in made:
        add_ticks(db, schedule_id, old)
    settings = RetentionSettings(age=7 * 86400, keep_ticks=1, batch=50, interval=60)

    async def prune_all() -> list[PruneResult]:
        pool = make_pool(database_url, 1, 2, "retention-test")
        await pool.open()
        try:
            pruner, results = Pruner(pool, settings), list[PruneResult]()
            while not results or results[-1].more:
                results.append(await pruner.prune_once())
                assert len(results) < 100, "the pruner never finished"
            # The pass after the interval: the runs whose ticks went last.
            results.append(await pruner.prune_once())
            return results
        finally:
            await pool.close()

    results = asyncio.run(prune_all())
    assert all(r.ticks <= settings.batch and r.tasks <= settings.batch for r in results)
    assert sum(r.ticks for r in results) == 2 * len(made)
    assert count(db, "schedule_ticks") == len(made)  # each schedule's newest
    assert sum(r.tasks for r in results) == 2 * len(made)  # their runs went after them
