"""The cron loop's database path with a controlled clock: every tick decided exactly once, with
the right outcome (catch-up, pause, overlap), its run never claimable early, DST on real
transitions. Real PostgreSQL, real concurrent claimers; `now` is passed in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from coordinator_svc.cron import (
    LOCKED_RETRY,
    MAX_TICKS_PER_PASS,
    PassResult,
    delay_after_pass,
    fire_due,
)
from store import schedules
from tests.support.schedules import create, fire, fire_all, in_transaction, ledger

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tasks_of(db: psycopg.Connection[Any], schedule_id: Any) -> list[tuple[Any, ...]]:
    """(fire_time, status, scheduled_at, run_at) of the schedule's runs, oldest first."""
    return db.execute(
        "SELECT fire_time, status, scheduled_at, run_at FROM tasks WHERE schedule_id = %s"
        " ORDER BY created_at, fire_time",
        (schedule_id,),
    ).fetchall()


def test_concurrent_passes_decide_every_tick_exactly_once(database_url, db):
    schedules = [create(database_url, T0) for _ in range(12)]
    # 4 coordinators walk the same 40 s of one-second ticks in half-second steps, in small
    # batches so that they really interleave over the same schedules.
    steps = [s(k / 2) for k in range(1, 81)]

    async def coordinator() -> list[PassResult]:
        results = []
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for now in steps:
                while True:
                    async with conn.transaction():
                        result = await fire_due(conn, now, batch=3)
                    results.append(result)
                    if not result.full:
                        break
        return results

    async def race() -> list[list[PassResult]]:
        return await asyncio.gather(*(coordinator() for _ in range(4)))

    per_coordinator = asyncio.run(race())
    expected = {(sc.id, s(k)) for sc in schedules for k in range(1, 41)}
    rows = db.execute("SELECT schedule_id, fire_time, outcome FROM schedule_ticks").fetchall()
    assert {(r[0], r[1]) for r in rows} == expected
    assert {r[2] for r in rows} == {"started"}
    planned = sum(r.planned for results in per_coordinator for r in results)
    assert planned == len(expected), "some tick was decided by two passes"
    assert sum(1 for results in per_coordinator if any(r.planned for r in results)) > 1
    runs = db.execute(
        "SELECT schedule_id, fire_time FROM tasks WHERE scheduled_at = fire_time"
    ).fetchall()
    assert sorted(runs) == sorted(expected)


def test_a_pass_that_finds_the_due_schedule_locked_is_retried_later_not_at_once(
    database_url, db
):
    schedule = create(database_url, T0)
    with psycopg.connect(database_url) as other:  # another coordinator's pass, not committed
        other.execute("SELECT 1 FROM schedules WHERE id = %s FOR UPDATE", (schedule.id,))
        locked_out = fire(database_url, s(1))
        assert locked_out.claimed == 0
        assert delay_after_pass(locked_out) == LOCKED_RETRY > 0
    fired = fire(database_url, s(1))
    assert fired.claimed == 1 and fired.planned == 1
    assert delay_after_pass(fired) == 0


def test_catch_up_runs_recent_ticks_in_order_and_records_older_ones_as_missed(database_url, db):
    sc = create(database_url, T0, cron="*/10 * * * * *", catchup_window_seconds=60)
    assert fire(database_url, s(10)).outcomes == {"started": 1}
    # The coordinators were down from 10 s to 300 s.
    fire_all(database_url, s(300))
    ticks = ledger(db, sc.id)
    assert [t for t, _ in ticks] == [s(k) for k in range(10, 301, 10)]
    outcome = dict(ticks)
    assert all(outcome[s(k)] == "missed" for k in range(20, 240, 10))
    assert all(outcome[s(k)] == "started" for k in range(240, 301, 10))
    # Runs were created in fire order, each claimable at its own (past) fire time.
    runs = tasks_of(db, sc.id)
    assert [r[0] for r in runs] == [s(10), *(s(k) for k in range(240, 301, 10))]
    assert all(r[2] == r[3] == r[0] for r in runs)


def test_a_long_outage_is_recorded_over_several_passes(database_url, db):
    sc = create(database_url, T0, catchup_window_seconds=30)
    results = fire_all(database_url, s(2500))
    assert len(results) >= 2500 // MAX_TICKS_PER_PASS
    ticks = ledger(db, sc.id)
    assert [t for t, _ in ticks] == [s(k) for k in range(1, 2501)]
    assert [o for _, o in ticks].count("missed") == 2469
    assert [o for _, o in ticks[-31:]] == ["started"] * 31
    assert fire(database_url, s(2500)).claimed == 0


def test_paused_ticks_are_recorded_and_resume_runs_only_later_ticks(database_url, db):
    sc = create(database_url, T0, cron="*/10 * * * * *")
    fire(database_url, s(10))
    in_transaction(database_url, lambda c: schedules.set_schedule_paused(c, sc.id, True, s(12)))
    fire(database_url, s(30))
    # Resumed at 45 s; no pass ran between 30 s and 60 s.
    in_transaction(database_url, lambda c: schedules.set_schedule_paused(c, sc.id, False, s(45)))
    fire(database_url, s(60))
    assert ledger(db, sc.id) == [
        (s(10), "started"),
        (s(20), "skipped_paused"),
        (s(30), "skipped_paused"),
        (s(40), "skipped_paused"),  # before the resume: never runs, even within catch-up
        (s(50), "started"),
        (s(60), "started"),
    ]


def test_a_schedule_created_paused_records_ticks_without_running_them(database_url, db):
    sc = create(database_url, T0, cron="*/10 * * * * *", paused=True)
    fire(database_url, s(30))
    assert ledger(db, sc.id) == [(s(k), "skipped_paused") for k in (10, 20, 30)]
    assert tasks_of(db, sc.id) == []


def finish_runs(db: psycopg.Connection[Any], schedule_id: Any) -> None:
    db.execute(
        "UPDATE tasks SET status = 'succeeded', completed_at = now()"
        " WHERE schedule_id = %s AND status = 'queued'",
        (schedule_id,),
    )


def test_overlap_skip_records_skipped_ticks_while_a_run_is_unfinished(database_url, db):
    sc = create(database_url, T0, cron="*/10 * * * * *", overlap="skip")
    fire(database_url, s(10))
    fire(database_url, s(20))
    fire(database_url, s(40))  # catch-up of 30 s and 40 s: both see the run of 10 s
    finish_runs(db, sc.id)
    fire(database_url, s(50))
    assert ledger(db, sc.id) == [
        (s(10), "started"),
        (s(20), "skipped_overlap"),
        (s(30), "skipped_overlap"),
        (s(40), "skipped_overlap"),
        (s(50), "started"),
    ]
    assert [r[1] for r in tasks_of(db, sc.id)] == ["succeeded", "queued"]


def test_overlap_cancel_previous_cancels_the_unfinished_run_and_starts_a_new_one(database_url, db):
    sc = create(database_url, T0, cron="*/10 * * * * *", overlap="cancel_previous")
    fire(database_url, s(10))
    fire(database_url, s(30))  # 20 s cancels the run of 10 s; 30 s cancels the run of 20 s
    assert ledger(db, sc.id) == [
        (s(10), "started"),
        (s(20), "cancelled_previous"),
        (s(30), "cancelled_previous"),
    ]
    runs = tasks_of(db, sc.id)
    assert [(r[0], r[1]) for r in runs] == [
        (s(10), "cancelled"),
        (s(20), "cancelled"),
        (s(30), "queued"),
    ]


def test_overlap_allow_starts_every_tick(database_url, db):
    sc = create(database_url, T0, cron="*/10 * * * * *", overlap="allow")
    fire(database_url, s(10))
    fire(database_url, s(30))
    assert [o for _, o in ledger(db, sc.id)] == ["started"] * 3
    assert [r[1] for r in tasks_of(db, sc.id)] == ["queued"] * 3


def test_the_database_refuses_a_second_unfinished_exclusive_run(database_url, db):
    sc = create(database_url, T0, cron="*/10 * * * * *", overlap="skip")
    fire(database_url, s(10))
    with pytest.raises(psycopg.errors.UniqueViolation):
        in_transaction(database_url, lambda c: schedules.insert_triggered_run(c, sc.id))


def test_runs_are_claimable_at_fire_time_plus_jitter_never_earlier(database_url, db):
    sc = create(database_url, T0, jitter_seconds=5.0)
    fire(database_url, s(40))
    runs = tasks_of(db, sc.id)
    assert len(runs) == 40
    offsets = [(run_at - fire_time).total_seconds() for fire_time, _, _, run_at in runs]
    assert all(0 <= o <= 5 for o in offsets)
    assert len(set(offsets)) > 1  # really spread, not a constant delay
    assert all(r[2] == r[0] for r in runs)  # scheduled_at is the fire time


def test_every_is_anchored_to_creation(database_url, db):
    created = s(0.25)
    sc = create(database_url, created, cron="@every 7s")
    fire(database_url, s(30))
    assert [t for t, _ in ledger(db, sc.id)] == [
        created + timedelta(seconds=7 * k) for k in range(1, 5)
    ]


def test_deleted_schedules_never_fire(database_url, db):
    sc = create(database_url, T0)
    fire(database_url, s(2))
    in_transaction(database_url, lambda c: schedules.delete_schedule(c, sc.id))
    assert fire(database_url, s(10)).claimed == 0
    assert len(ledger(db, sc.id)) == 2


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "timezone", "created", "until", "expected"),
    [
        # 02:30 does not exist on 2026-03-08 in New York: fires once, at 03:00 EDT.
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T00:00",
            "2026-03-10T00:00",
            ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"],
        ),
        # 01:30 happens twice on 2026-11-01 in New York: fires once, at 01:30 EDT.
        (
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T00:00",
            "2026-11-03T00:00",
            ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"],
        ),
        # Hour wildcards keep absolute spacing: both 01:00 EDT and 01:00 EST fire.
        (
            "0 * * * *",
            "America/New_York",
            "2026-11-01T03:30",
            "2026-11-01T07:30",
            ["2026-11-01T04:00", "2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00"],
        ),
        # Lord Howe moves 30 minutes: local 02:15 on 2026-10-04 does not exist; fires at 02:30.
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2026-10-02T12:00",
            "2026-10-05T12:00",
            ["2026-10-02T15:45", "2026-10-03T15:30", "2026-10-04T15:15"],
        ),
    ],
)
def test_dst_transitions_on_the_ledger(database_url, db, cron, timezone, created, until, expected):
    sc = create(
        database_url, z(created), cron=cron, timezone=timezone, catchup_window_seconds=366 * 86400
    )
    fire_all(database_url, z(until))
    assert ledger(db, sc.id) == [(z(e), "started") for e in expected]


def test_claiming_due_schedules_uses_the_due_index(db):
    db.execute("SET enable_seqscan = off")
    plan = "\n".join(
        str(r[0])
        for r in db.execute(
            "EXPLAIN " + schedules.CLAIM_DUE_SCHEDULES, {"now": T0, "limit": 10}
        ).fetchall()
    )
    assert "schedules_due" in plan, plan
