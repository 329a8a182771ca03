"""Task dependencies on the real database, through the store's own statements: a task waits
until every task in its `after` succeeded, ends as dependency_failed (with everything that
waits on it) when one fails or is cancelled, whatever ends it, and a task inserted while its
dependency ends at the same moment never waits forever."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from devtools.cluster import wait_for
from store import dependencies, dispatch, retention, tasks
from store.models import AttemptEnd
from store.vocabulary import AttemptStatus, EndReason
from tests.support.attempts import end_attempt

Db = psycopg.Connection[Any]
AConn = psycopg.AsyncConnection[Any]

INSERT = (
    "INSERT INTO tasks (id, command, scheduled_at, run_at)"
    " SELECT id, 'true', now(), now() FROM unnest(%s::uuid[]) AS id"
)


async def insert_with_after(conn: AConn, after: dict[uuid.UUID, Sequence[uuid.UUID]]) -> None:
    """What the scheduler does in one transaction: lock what the new tasks name (those not
    created here), insert them, add their edges."""
    existing = {d for deps in after.values() for d in deps} - set(after)
    assert await dependencies.lock_tasks(conn, sorted(existing)) == existing
    await conn.execute(INSERT, (list(after),))
    await dependencies.add_dependencies(conn, [(t, d) for t, deps in after.items() for d in deps])


def add(url: str, after: dict[uuid.UUID, Sequence[uuid.UUID]]) -> None:
    async def go() -> None:
        async with await AConn.connect(url) as conn, conn.transaction():
            await insert_with_after(conn, after)

    asyncio.run(go())


def new(db: Db, url: str, *after: uuid.UUID) -> uuid.UUID:
    task_id = uuid.uuid4()
    add(url, {task_id: after})
    return task_id


def run(url: str, outcomes: dict[uuid.UUID, AttemptStatus]) -> None:
    """Claim every due task, which must be exactly those of `outcomes`, and end each so."""

    async def go() -> None:
        async with await AConn.connect(url, autocommit=True) as conn:
            claim = await dispatch.claim_for_free_slots(conn, 60.0, 0)
            assert {a.task_id for a in claim.attempts} == set(outcomes)
            for a in claim.attempts:
                status = outcomes[a.task_id]
                reason = EndReason.EXIT_CODE if status == AttemptStatus.FAILED else None
                await end_attempt(conn, AttemptEnd(a.task_id, a.attempt, status, reason))

    asyncio.run(go())


def cancel(url: str, *task_ids: uuid.UUID) -> None:
    async def go() -> None:
        async with await AConn.connect(url, autocommit=True) as conn:
            await tasks.cancel_tasks(conn, list(task_ids))

    asyncio.run(go())


def state(db: Db, task_id: uuid.UUID) -> tuple[str, str | None, int]:
    row = db.execute(
        "SELECT status, last_reason, unmet_dependencies FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


DEP_FAILED = ("failed", "dependency_failed")


@pytest.fixture
def worker(db: Db) -> None:
    db.execute(
        "INSERT INTO workers (id, address, slots, last_heartbeat_at)"
        " VALUES ('w1', '127.0.0.1:9001', 100, now())"
    )


def test_a_chain_runs_in_order_and_a_failure_in_the_middle_ends_the_rest(
    db: Db, database_url: str, worker: None
) -> None:
    a = new(db, database_url)
    b = new(db, database_url, a)
    c = new(db, database_url, b)
    assert state(db, b) == ("waiting", None, 1) and state(db, c) == ("waiting", None, 1)

    run(database_url, {a: AttemptStatus.SUCCEEDED})  # only A was claimable
    assert state(db, b) == ("queued", None, 0)
    assert state(db, c)[0] == "waiting"

    run(database_url, {b: AttemptStatus.FAILED})
    assert state(db, c)[:2] == DEP_FAILED
    assert db.execute("SELECT count(*) FROM attempts WHERE task_id = %s", (c,)).fetchone() == (0,)
    run(database_url, {})  # nothing left to claim


def test_a_diamond_releases_its_join_only_when_both_sides_succeeded(
    db: Db, database_url: str, worker: None
) -> None:
    a = new(db, database_url)
    b = new(db, database_url, a)
    c = new(db, database_url, a)
    d = new(db, database_url, b, c)
    assert state(db, d) == ("waiting", None, 2)
    run(database_url, {a: AttemptStatus.SUCCEEDED})
    run(database_url, {b: AttemptStatus.SUCCEEDED, c: AttemptStatus.SUCCEEDED})
    assert state(db, d) == ("queued", None, 0)
    run(database_url, {d: AttemptStatus.SUCCEEDED})


def test_released_tasks_fall_due_no_earlier_than_asked(
    db: Db, database_url: str, worker: None
) -> None:
    a = new(db, database_url)
    later = new(db, database_url, a)
    db.execute(
        "UPDATE tasks SET scheduled_at = now() + interval '1 hour',"
        " run_at = now() + interval '1 hour' WHERE id = %s",
        (later,),
    )
    run(database_url, {a: AttemptStatus.SUCCEEDED})
    assert state(db, later) == ("queued", None, 0)
    row = db.execute("SELECT run_at > now() + interval '50 minutes' FROM tasks WHERE id = %s",
                     (later,)).fetchone()  # fmt: skip
    assert row == (True,)
    run(database_url, {})


def test_what_already_ended_settles_a_new_task_at_once(
    db: Db, database_url: str, worker: None
) -> None:
    ok, bad = new(db, database_url), new(db, database_url)
    run(database_url, {ok: AttemptStatus.SUCCEEDED, bad: AttemptStatus.FAILED})
    gone = new(db, database_url)
    cancel(database_url, gone)

    assert state(db, new(db, database_url, ok)) == ("queued", None, 0)
    assert state(db, new(db, database_url, ok, bad))[:2] == DEP_FAILED
    assert state(db, new(db, database_url, gone))[:2] == DEP_FAILED
    # siblings created together: the one that names a failed task ends, and so do its dependents
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    add(database_url, {first: [bad], second: [first], third: [ok, second]})
    assert {state(db, t)[:2] for t in (first, second, third)} == {DEP_FAILED}


def test_cancelling_a_waiting_task_ends_what_waits_on_it(
    db: Db, database_url: str, worker: None
) -> None:
    a = new(db, database_url)
    b = new(db, database_url, a)
    c = new(db, database_url, b)
    cancel(database_url, b)
    assert state(db, b)[:2] == ("cancelled", "cancelled")
    assert state(db, c)[:2] == DEP_FAILED
    assert state(db, a) == ("queued", None, 0)


def test_a_long_chain_ends_at_once_when_its_head_is_cancelled(db: Db, database_url: str) -> None:
    ids = [uuid.uuid4() for _ in range(10_000)]
    add(database_url, {t: ids[i - 1 : i] for i, t in enumerate(ids)})
    waiting = db.execute("SELECT count(*) FROM tasks WHERE status = 'waiting'").fetchone()
    assert waiting == (len(ids) - 1,)
    cancel(database_url, ids[0])
    rows = db.execute(
        "SELECT last_reason, count(*) FROM tasks WHERE status = 'failed' GROUP BY 1"
    ).fetchall()
    assert rows == [("dependency_failed", len(ids) - 1)]


def test_a_dependency_that_ends_while_a_task_naming_it_is_inserted_is_seen_either_way(
    db: Db, database_url: str
) -> None:
    """The insert locks X; X's end waits for the insert's commit, and X's trigger then sees the
    new edge. Without the lock X's end commits, its trigger sees no edge, the insert read X as
    queued, and the new task would wait forever."""
    for ending_first in (False, True):
        x = new(db, database_url)
        t = uuid.uuid4()
        with psycopg.connect(database_url) as inserting, psycopg.connect(database_url) as ending:
            ending.execute("SET lock_timeout = '20s'")
            ender = threading.Thread(target=cancel_and_commit, args=(ending, x))
            if ending_first:
                tasks_cancel_sync(ending, x)  # uncommitted: the insert's lock waits for it
                inserter = threading.Thread(target=insert_sync, args=(database_url, t, x))
                inserter.start()
                wait_until_blocked_by(db, ending.info.backend_pid)  # the insert waits on X
                ending.commit()
                inserter.join(30)
                assert not inserter.is_alive()
            else:
                insert_open(inserting, t, x)  # locked X, not committed
                ender.start()
                wait_until_blocked_by(db, inserting.info.backend_pid)  # the cancel waits on X
                inserting.commit()
                ender.join(30)
                assert not ender.is_alive()
        assert state(db, x)[0] == "cancelled"
        assert state(db, t)[:2] == DEP_FAILED, ending_first


# Whether some session waits for a lock that the backend `holder` holds.
BLOCKED_BY = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid)))"


def wait_until_blocked_by(db: Db, holder: int) -> None:
    """Wait until another session is blocked on a lock of `holder` (db is autocommit, so each
    read of pg_stat_activity is fresh)."""
    wait_for(
        lambda: db.execute(BLOCKED_BY, (holder,)).fetchone() == (True,),
        timeout=20,
        interval=0.01,
        message=f"a session blocked by backend {holder}",
    )


def tasks_cancel_sync(conn: Db, task_id: uuid.UUID) -> None:
    conn.execute(tasks.CANCEL_TASKS, {"ids": [task_id]})


def cancel_and_commit(conn: Db, task_id: uuid.UUID) -> None:
    tasks_cancel_sync(conn, task_id)
    conn.commit()


def insert_sync(url: str, task_id: uuid.UUID, after: uuid.UUID) -> None:
    add(url, {task_id: [after]})


def insert_open(sync_conn: Db, task_id: uuid.UUID, after: uuid.UUID) -> None:
    """Run the insert's statements on an open (sync) transaction, without committing."""
    existing = {after}
    cur = sync_conn.execute(dependencies.LOCK_TASKS, {"ids": sorted(existing)})
    assert {r[0] for r in cur.fetchall()} == existing
    sync_conn.execute(INSERT, ([task_id],))
    sync_conn.execute(dependencies.ADD_DEPENDENCIES, {"task_ids": [task_id], "depends_on": [after]})


def test_a_dependency_lost_with_its_worker_ends_what_waits_on_it(
    db: Db, database_url: str, worker: None
) -> None:
    """The coordinator's recovery path: the worker is declared lost and its attempt ends
    worker_lost; with no retry left the task fails, and the trigger ends its dependents."""
    a = new(db, database_url)
    b = new(db, database_url, a)

    async def lose() -> None:
        async with await AConn.connect(database_url, autocommit=True) as conn:
            claim = await dispatch.claim_for_free_slots(conn, 60.0, 0)
            assert [c.task_id for c in claim.attempts] == [a]
            await conn.execute("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour'")
            assert await dispatch.declare_lost_workers(conn, 3.0) == ["w1"]
            (key,) = await dispatch.open_attempts_of_lost_workers(conn, 500)
            end = AttemptEnd(key.task_id, key.attempt, AttemptStatus.FAILED, EndReason.WORKER_LOST)
            await dispatch.end_attempts(conn, [end])

    asyncio.run(lose())
    assert state(db, a)[:2] == ("failed", "worker_lost")
    assert state(db, b)[:2] == DEP_FAILED


def test_retention_of_a_dependency_that_succeeded_leaves_the_count_alone(
    db: Db, database_url: str, worker: None
) -> None:
    a, b = new(db, database_url), new(db, database_url)
    db.execute("UPDATE tasks SET run_at = now() + interval '1 hour' WHERE id = %s", (b,))
    d = new(db, database_url, a, b)
    run(database_url, {a: AttemptStatus.SUCCEEDED})
    assert state(db, d) == ("waiting", None, 1)

    async def prune() -> int:
        async with await AConn.connect(database_url, autocommit=True) as conn:
            return await retention.prune_tasks(conn, datetime.now(UTC) + timedelta(hours=1), 100)

    assert asyncio.run(prune()) == 1  # A, the only finished task
    assert db.execute(
        "SELECT depends_on FROM task_dependencies WHERE task_id = %s", (d,)
    ).fetchall() == [(b,)]
    db.execute("UPDATE tasks SET run_at = now() WHERE id = %s", (b,))
    run(database_url, {b: AttemptStatus.SUCCEEDED})
    assert state(db, d) == ("queued", None, 0)


def test_two_dependencies_succeeding_at_once_release_their_dependent(
    db: Db, database_url: str
) -> None:
    """Each ending decrements the dependent's count of unmet dependencies: the second waits for
    the first's row lock, then counts down from the newest value, so none is lost."""
    for worker_id, port in (("w1", 9001), ("w2", 9002)):
        db.execute(
            "INSERT INTO workers (id, address, slots, last_heartbeat_at) VALUES (%s, %s, 1, now())",
            (worker_id, f"127.0.0.1:{port}"),
        )
    a, b = new(db, database_url), new(db, database_url)
    d = new(db, database_url, a, b)

    async def race() -> bool:
        async with (
            await AConn.connect(database_url, autocommit=True) as claimer,
            await AConn.connect(database_url) as first,
            await AConn.connect(database_url) as second,
        ):
            claim = await dispatch.claim_for_free_slots(claimer, 60.0, 0)
            ends = {
                c.task_id: AttemptEnd(c.task_id, c.attempt, AttemptStatus.SUCCEEDED, None)
                for c in claim.attempts
            }
            assert set(ends) == {a, b} and len({c.worker_id for c in claim.attempts}) == 2
            await dispatch.end_attempts(first, [ends[a]])  # D's row locked until commit
            later = asyncio.create_task(dispatch.end_attempts(second, [ends[b]]))
            # Until the second ending is seen blocked on the first's lock, or ends without it.
            deadline = time.monotonic() + 20
            waited = False
            while not waited and not later.done() and time.monotonic() < deadline:
                cur = await claimer.execute(BLOCKED_BY, (first.info.backend_pid,))
                waited = await cur.fetchone() == (True,)
                await asyncio.sleep(0.01)
            await first.commit()
            await later
            await second.commit()
            return waited

    assert asyncio.run(race())  # the second ending did wait on the first
    assert state(db, d) == ("queued", None, 0)
