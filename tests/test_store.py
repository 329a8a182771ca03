"""The store against a real PostgreSQL: the migrated schema matches every statement the code
runs, migrations are idempotent and safe when run at once, and the claim is never early, uses
its partial index, gives concurrent claimers disjoint work within each worker's slots, and
reports for stale attempts change nothing. The DDL's CHECKs reject invalid rows."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import inspect
import json
import pkgutil
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg import pq

import store
from devtools.cluster import REPO_ROOT, wait_for
from devtools.invariants import SlotWatch
from store import dispatch, migrate, models
from store.models import AttemptEnd, AttemptKey, Claim, ClaimedAttempt
from store.vocabulary import AttemptStatus, EndReason
from tests.support.attempts import end_attempt, mark_attempt_running

Db = psycopg.Connection[Any]
AConn = psycopg.AsyncConnection[Any]

# --- the schema the code queries -----------------------------------------------------------

_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
# Utility statements: not preparable, so run (and rolled back) instead.
_UTILITY_VERBS = ("LISTEN", "CREATE")
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sbt]")


def store_modules() -> dict[str, Any]:
    """Every module of the store package, by its short name."""
    return {
        info.name: importlib.import_module(f"store.{info.name}")
        for info in pkgutil.iter_modules(store.__path__)
    }


def sql_statements() -> dict[str, str]:
    """Every named SQL statement in the store package, as module.NAME."""
    found = {}
    for module_name, module in store_modules().items():
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and value.strip():
                first = value.split(None, 1)[0].upper()
                if first in (*_VERBS, *_UTILITY_VERBS):
                    found[f"{module_name}.{name}"] = value
    return found


def positional(query: str) -> str:
    """psycopg's %(name)s placeholders as the server's $n (one number per name)."""
    numbers: dict[str, int] = {}
    return _PLACEHOLDER.sub(
        lambda m: f"${numbers.setdefault(m.group(1), len(numbers) + 1)}", query
    ).replace("%%", "%")


_ROW_ARGUMENTS = (("class_row", 0), ("fetch_one", 1), ("fetch_all", 1))


def row_classes() -> dict[str, set[type]]:
    """Statement (module.NAME) -> the dataclasses its rows are built into in that module:
    class_row(Row), or the fetch helpers' row argument fetch_one/fetch_all(conn, Row, ...)."""
    statements = set(sql_statements())
    mapping: dict[str, set[type]] = {}
    for module_name, module in store_modules().items():
        for fn in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(fn, ast.AsyncFunctionDef | ast.FunctionDef):
                continue
            classes = {
                getattr(models, arg.id)
                for node in ast.walk(fn)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                for position, arg in enumerate(node.args)
                if isinstance(arg, ast.Name)
                and (node.func.id, position) in _ROW_ARGUMENTS
                and hasattr(models, arg.id)
            }
            used = {
                f"{module_name}.{n.id}"
                for n in ast.walk(fn)
                if isinstance(n, ast.Name) and f"{module_name}.{n.id}" in statements
            }
            for name in used:
                mapping.setdefault(name, set()).update(classes)
    return mapping


def schema_problems(conn: Db) -> list[str]:
    """Prepare every statement (the server resolves every table, column and type, as it would
    to run it) and check the columns of rows built into dataclasses against their fields.
    Runs inside the caller's transaction, each statement under a savepoint."""
    problems = []
    classes = row_classes()
    for name, query in sql_statements().items():
        conn.execute("SAVEPOINT schema_check")
        if query.split(None, 1)[0].upper() in _UTILITY_VERBS:
            try:
                conn.execute(query.encode())
            except psycopg.Error as exc:
                problems.append(f"{name}: {exc}")
            conn.execute("ROLLBACK TO SAVEPOINT schema_check")
            continue
        result = conn.pgconn.prepare(b"", positional(query).encode())
        if result.status != pq.ExecStatus.COMMAND_OK:
            problems.append(f"{name}: {(result.error_message or b'').decode().strip()}")
            conn.execute("ROLLBACK TO SAVEPOINT schema_check")
            continue
        described = conn.pgconn.describe_prepared(b"")
        columns = {(described.fname(i) or b"").decode() for i in range(described.nfields)}
        for cls in classes.get(name, set()):
            fields = {f.name for f in dataclasses.fields(cls)}
            required = {
                f.name
                for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
            if columns and not required <= columns <= fields:
                problems.append(
                    f"{name} -> {cls.__name__}: columns without a field {sorted(columns - fields)},"
                    f" fields without a column {sorted(required - columns)}"
                )
        conn.execute("RELEASE SAVEPOINT schema_check")
    return problems


def test_every_statement_prepares_against_the_migrated_schema(database_url):
    statements = sql_statements()
    # The finder really finds the statements of every module that has some (a broken finder
    # would make this test vacuous).
    assert {
        "tasks.INSERT_TASK",
        "dispatch.CLAIM_FOR_FREE_SLOTS",
        "dispatch.END_ATTEMPTS",
        "schedules.RECORD_TICKS",
        "wakeups.LISTEN_WAKEUP",
        "migrate.SCHEMA_VERSION",
        "migrate.CREATE_VERSION_TABLE",
    } <= set(statements)
    assert len(statements) >= 40
    assert len(row_classes()) >= 10
    with psycopg.connect(database_url) as conn:
        assert schema_problems(conn) == []


def test_psycopg_caches_the_conversion_of_every_statement():
    """psycopg re-parses a statement longer than its cache limit at every execution; store.db
    raises the limit above the longest statement (the claim and the endings are past 4 KiB)."""
    import psycopg._queries

    import store.db  # noqa: F401  (sets the limit)

    limit = psycopg._queries.MAX_CACHED_STATEMENT_LENGTH
    too_long = {name: len(s) for name, s in sql_statements().items() if len(s) > limit}
    assert too_long == {}, f"longer than psycopg caches ({limit} characters): {too_long}"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("ALTER TABLE tasks RENAME COLUMN run_at TO due_at", 'column "run_at" does not exist'),
        ("ALTER TABLE workers RENAME COLUMN claimed_total TO claimed", "claimed_total does not"),
        ("ALTER TABLE attempts ADD COLUMN note text", "columns without a field ['note']"),
        ("ALTER TABLE schedules DROP COLUMN jitter_seconds", '"jitter_seconds"'),
    ],
)
def test_the_schema_check_notices_a_schema_the_code_does_not_match(database_url, change, says):
    with psycopg.connect(database_url) as conn:
        conn.execute(change)
        problems = schema_problems(conn)
        conn.rollback()
    assert any(says in p for p in problems), problems


# --- migrations -----------------------------------------------------------------------------

SCHEMA_FINGERPRINT = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' '
       || is_nullable || ' ' || coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1, 2
"""


def fingerprint(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(str(a), str(b)) for a, b in conn.execute(SCHEMA_FINGERPRINT).fetchall()]


def advisory_waiters(conn: Db) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    return int(row[0]) if row else 0


def test_migrations_run_at_once_by_several_processes_apply_each_version_once(
    empty_database_url, database_url
):
    latest = migrate.latest_version()
    script = "import sys; from store.migrate import migrate; print(migrate(sys.argv[1]))"
    with psycopg.connect(empty_database_url, autocommit=True) as holder:
        # Hold the migration lock so that every process is provably waiting at the same time.
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, empty_database_url],
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        try:
            wait_for(lambda: advisory_waiters(holder) == 4, 30, message="4 migrators waiting")
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (migrate.MIGRATION_LOCK_KEY,))
        outcomes = [p.communicate(timeout=60) for p in procs]
    for proc, (out, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == str(latest)
    with psycopg.connect(empty_database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, latest + 1))
    # The result is exactly the schema of a database migrated alone (the suite's template).
    assert fingerprint(empty_database_url) == fingerprint(database_url)


def test_migrating_again_changes_nothing(database_url):
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    with ThreadPoolExecutor(3) as pool:
        versions = list(pool.map(migrate.migrate, [database_url] * 3))
    assert versions == [migrate.latest_version()] * 3
    with psycopg.connect(database_url) as conn:
        after = conn.execute("SELECT version, applied_at FROM schema_migrations").fetchall()
    assert sorted(after) == sorted(before)


# --- claiming -------------------------------------------------------------------------------


def run(url: str, work: Callable[[AConn], Any]) -> Any:
    """Run async `work` in one transaction on a fresh connection, from synchronous test code."""

    async def go() -> Any:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await work(conn)

    return asyncio.run(go())


def add_worker(db: Db, worker_id: str, slots: int = 4) -> None:
    db.execute(
        "INSERT INTO workers (id, address, slots, last_heartbeat_at) VALUES (%s, %s, %s, now())",
        (worker_id, f"127.0.0.1:{9000 + len(worker_id)}", slots),
    )


def add_tasks(db: Db, offsets: list[float], command: str = "true") -> list[uuid.UUID]:
    """Queued tasks due at now() + offset seconds (negative: already due)."""
    ids = [uuid.uuid4() for _ in offsets]
    db.execute(
        "INSERT INTO tasks (id, command, scheduled_at, run_at)"
        " SELECT id, %s, now() + make_interval(secs => o), now() + make_interval(secs => o)"
        " FROM unnest(%s::uuid[], %s::float8[]) AS x (id, o)",
        (command, ids, offsets),
    )
    return ids


async def claim_and_now(conn: AConn) -> tuple[list[ClaimedAttempt], datetime]:
    claimed = (await dispatch.claim_for_free_slots(conn, 60.0, 0)).attempts
    cur = await conn.execute("SELECT now()")  # the claim's own clock: same transaction
    row = await cur.fetchone()
    assert row is not None
    return claimed, row[0]


def test_the_claim_never_returns_a_task_before_its_run_at(db, database_url):
    add_worker(db, "w1", slots=100)
    due = add_tasks(db, [-1.0, -0.5, 0.0])
    soon = add_tasks(db, [0.05 * k for k in range(1, 21)])
    later = add_tasks(db, [3600.0, 86400.0])
    claimed: list[uuid.UUID] = []
    deadline = time.monotonic() + 20
    while len(claimed) < len(due) + len(soon) and time.monotonic() < deadline:
        batch, now = run(database_url, claim_and_now)
        for attempt in batch:
            assert attempt.run_at <= now, f"claimed {attempt.task_id} before its run_at"
        claimed += [a.task_id for a in batch]
    assert sorted(claimed) == sorted(due + soon)  # each once, and never the later ones
    states = dict(db.execute("SELECT id, status FROM tasks WHERE id = ANY(%s)", (later,)))
    assert states == {t: "queued" for t in later}
    row = db.execute("SELECT count(*) FROM tasks WHERE picked_at < run_at").fetchone()
    assert row == (0,)


def plan_of(db: Db, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of the statement's plan, flattened."""
    row = db.execute(f"EXPLAIN (FORMAT JSON) {statement}", params).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes, stack = [], [document[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def test_the_claim_scans_the_partial_index_of_queued_tasks(db):
    # A realistic table: many finished tasks and a few queued ones, with fresh statistics.
    db.execute(
        "INSERT INTO tasks (id, command, status, scheduled_at, run_at, completed_at)"
        " SELECT gen_random_uuid(), 'true', 'succeeded', t, t, t + interval '1 second'"
        " FROM generate_series(now() - interval '30 days', now() - interval '1 minute',"
        "                      interval '1 minute') AS t"
    )
    # A backlog, where the order matters: with a handful queued, a sort of those is as cheap.
    db.execute(
        "INSERT INTO tasks (id, command, scheduled_at, run_at, priority, queue)"
        " SELECT gen_random_uuid(), 'true', t, t, i % 7 - 3, (ARRAY['default', 'gpu'])[i % 2 + 1]"
        " FROM generate_series(1, 2000) AS i, LATERAL (SELECT now() - i * interval '1 s') AS x (t)"
    )
    add_tasks(db, [60.0] * 20)
    db.execute("ANALYZE tasks")
    add_worker(db, "w1", slots=8)
    claim = (dispatch.CLAIM_FOR_FREE_SLOTS, {"live_within": 60.0, "rotation": 0})

    def scans(statement: str, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        return [
            (n["Node Type"], n.get("Index Name"))
            for n in plan_of(db, statement, params)
            if n.get("Relation Name") == "tasks"
        ]

    # The claim order (queue, then priority with aging) is read from its index, sorted.
    assert ("Index Scan", "tasks_queued_claim") in scans(*claim)
    assert not any(kind == "Seq Scan" for kind, _ in scans(*claim))
    # So is a limited queue's (its room bounds the scan, known only at run time).
    with db.transaction(force_rollback=True):
        db.execute("INSERT INTO queues (name, max_running, running) VALUES ('default', 5, 1)")
        assert ("Index Scan", "tasks_queued_claim") in scans(*claim)
        assert not any(kind == "Seq Scan" for kind, _ in scans(*claim))
    # The same plan without the indexes reads the whole table: what they save.
    with db.transaction(force_rollback=True):
        db.execute("DROP INDEX tasks_queued_claim")
        db.execute("DROP INDEX tasks_queued_run_at")
        assert ("Seq Scan", None) in scans(*claim)


def add_prioritised(db: Db, tasks: list[tuple[float, int]]) -> list[uuid.UUID]:
    """Queued tasks (due at now() + offset seconds, priority)."""
    ids = [uuid.uuid4() for _ in tasks]
    db.execute(
        "INSERT INTO tasks (id, command, scheduled_at, run_at, priority)"
        " SELECT id, 'true', now() + make_interval(secs => o), now() + make_interval(secs => o), p"
        " FROM unnest(%s::uuid[], %s::float8[], %s::int[]) AS x (id, o, p)",
        (ids, [o for o, _ in tasks], [p for _, p in tasks]),
    )
    return ids


def claim_one_at_a_time(db: Db, database_url: str, rounds: int) -> list[uuid.UUID]:
    """Claim with one free slot, `rounds` times, freeing the slot after each claim."""
    order = []
    for _ in range(rounds):
        (attempt,) = run(database_url, claim_for_free_slots).attempts
        order.append(attempt.task_id)
        db.execute("UPDATE worker_endings e SET ended_total = w.claimed_total"
                   " FROM workers w WHERE w.id = e.worker_id")
    return order


def test_due_tasks_are_claimed_highest_priority_first(db, database_url):
    add_worker(db, "w1", slots=1)
    low, high, middle, top, _never = add_prioritised(
        db, [(-1.0, -5), (-1.0, 50), (-1.0, 0), (-1.0, 100), (60.0, 100)]
    )
    assert claim_one_at_a_time(db, database_url, 4) == [top, high, middle, low]
    assert run(database_url, claim_for_free_slots).attempts == []  # `never` is not due yet


def test_a_waiting_task_gains_a_point_of_priority_a_minute(db, database_url):
    # Ten points below the default: ahead of a task just due once it has waited over 10 min.
    add_worker(db, "w1", slots=1)
    waited_11_min, waited_9_min, just_due = add_prioritised(
        db, [(-660.0, -10), (-540.0, -10), (-1.0, 0)]
    )
    order = claim_one_at_a_time(db, database_url, 3)
    assert order == [waited_11_min, just_due, waited_9_min]


def test_claim_rank_and_event_times_are_inlined_and_unchanged(db):
    # Inlined: the planner expands them, so no statement sets up a SQL function per call site.
    for call in ("claim_rank(run_at, priority)", "events_utc(run_at)"):
        plan = db.execute(f"EXPLAIN VERBOSE SELECT {call} FROM tasks").fetchall()
        text = "\n".join(row[0] for row in plan)
        assert call.split("(")[0] not in text, text
    # The same values as migration 008's `run_at - make_interval(secs => priority * 60)`, in a
    # session time zone with daylight saving, across its changes.
    db.execute("SET TimeZone = 'America/New_York'")
    row = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE claim_rank(t, p)"
        "                                  <> t - make_interval(secs => p * 60))"
        " FROM generate_series(timestamptz '2026-03-07', '2026-03-10', interval '7 min') AS t,"
        "      generate_series(-100, 100, 7) AS p"
    ).fetchone()
    assert row is not None and row[0] > 10_000 and row[1] == 0
    utc = db.execute("SELECT events_utc(timestamptz '2026-03-08 03:30:00.25-04')").fetchone()
    assert utc == ("2026-03-08T07:30:00.250000Z",)


async def claim_for_free_slots(conn: AConn, rotation: int = 0) -> Claim:
    return await dispatch.claim_for_free_slots(conn, 60.0, rotation)


def test_a_claim_interleaves_workers_from_a_rotating_first_one(db, database_url):
    for worker_id in ("w1", "w2", "w3"):
        add_worker(db, worker_id, slots=4)
    firsts = []
    for rotation in range(3):
        add_tasks(db, [-1.0, -1.0])
        claim = run(database_url, partial(claim_for_free_slots, rotation=rotation))
        assert claim.free == 12 - 2 * rotation
        workers = sorted(a.worker_id for a in claim.attempts)
        assert len(set(workers)) == 2, f"two tasks went to one worker: {workers}"
        firsts.append(set(workers))
    assert len({frozenset(f) for f in firsts}) > 1, "the rotation never moved"
    idle = run(database_url, claim_for_free_slots)
    assert (idle.attempts, idle.free, idle.next_due_in) == ([], 6, None)
    add_tasks(db, [30.0])
    later = run(database_url, claim_for_free_slots)
    assert later.attempts == [] and later.next_due_in is not None
    assert 25.0 < later.next_due_in <= 30.0


def test_concurrent_claimers_get_disjoint_tasks_within_each_workers_slots(db, database_url):
    slots = {"w1": 3, "w2": 2, "w3": 4}
    for worker_id, n in slots.items():
        add_worker(db, worker_id, n)
    tasks = add_tasks(db, [-1.0] * 90)
    claims: list[tuple[str, ClaimedAttempt]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    async def claim_once(conn: AConn) -> list[ClaimedAttempt]:
        claimed = (await dispatch.claim_for_free_slots(conn, 3600.0, 0)).attempts
        # The workers this claim used: their open attempts, as counted by everyone's committed
        # work and ours (the claim still holds their row locks).
        cur = await conn.execute(
            "SELECT w.worker_id, w.slots, w.open_attempts, count(a.task_id) FROM worker_load w"
            " LEFT JOIN attempts a ON a.worker_id = w.worker_id AND a.ended_at IS NULL"
            " WHERE w.worker_id = ANY(%s) GROUP BY w.worker_id, w.slots, w.open_attempts",
            (list({c.worker_id for c in claimed}),),
        )
        for worker_id, n_slots, counter, open_now in await cur.fetchall():
            assert open_now <= n_slots, f"{worker_id} oversubscribed: {open_now}/{n_slots}"
            assert counter == open_now, f"{worker_id} counts {counter}, has {open_now} open"
        return claimed

    async def claimer(name: str, seed: int) -> None:
        rng = random.Random(seed)
        held: list[ClaimedAttempt] = []
        # Autocommit: each `conn.transaction()` below is a transaction of its own.
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                async with conn.transaction():
                    batch = await claim_once(conn)
                with lock:
                    claims.extend((name, c) for c in batch)
                held += batch
                rng.shuffle(held)
                k = rng.randint(0, len(held))
                finishing, held = held[:k], held[k:]
                for attempt in finishing:
                    end = AttemptEnd(
                        attempt.task_id,
                        attempt.attempt,
                        AttemptStatus.SUCCEEDED,
                        None,
                        worker_id=attempt.worker_id,
                        exit_code=0,
                    )
                    async with conn.transaction():
                        assert await end_attempt(conn, end) == (True, "succeeded")
                cur = await conn.execute("SELECT count(*) FROM tasks WHERE status <> 'succeeded'")
                row = await cur.fetchone()
                if row is not None and row[0] == 0:
                    return

    def thread_main(name: str, seed: int) -> None:
        try:
            asyncio.run(claimer(name, seed))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(f"c{i}", i)) for i in range(4)]
    # Claims and endings race: sampled from outside, no worker ever has more open than slots.
    with SlotWatch(database_url, interval=0.01) as watch:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    assert not errors, errors
    assert watch.samples > 0 and watch.over == [], watch.over
    claimed_ids = [c.task_id for _, c in claims]
    assert Counter(claimed_ids).most_common(1)[0][1] == 1, "a task was claimed twice"
    assert sorted(claimed_ids) == sorted(tasks)
    assert len({name for name, _ in claims}) > 1, "only one claimer ever got work"
    assert {c.worker_id for _, c in claims} == set(slots)
    rows = db.execute("SELECT worker_id, open_attempts FROM worker_load ORDER BY 1").fetchall()
    assert rows == [(w, 0) for w in sorted(slots)]
    row = db.execute("SELECT count(*), max(attempt) FROM attempts").fetchone()
    assert row == (len(tasks), 1)


def test_an_ending_in_progress_does_not_hide_its_worker_from_a_claim(db, database_url):
    # An ending counts in worker_endings, a row no claim locks: while a report's transaction
    # is still open, a claim is offered the worker's other free slots (it used to skip the
    # worker, whose row the ending held), and only the slot that ending frees waits for it.
    add_worker(db, "w1", slots=4)
    add_tasks(db, [-1.0, -1.0])
    held = run(database_url, claim_for_free_slots).attempts
    assert len(held) == 2
    add_tasks(db, [-1.0] * 4)
    first = held[0]
    ending = AttemptEnd(
        first.task_id, first.attempt, AttemptStatus.SUCCEEDED, None, worker_id="w1", exit_code=0
    )

    async def go() -> tuple[Claim, Claim]:
        async with (
            await psycopg.AsyncConnection.connect(database_url) as ender,
            await psycopg.AsyncConnection.connect(database_url) as claimer,
        ):
            await ender.execute("SET statement_timeout = '30s'")
            await claimer.execute("SET statement_timeout = '30s'")
            await ender.commit()
            await claimer.commit()
            async with ender.transaction():
                assert await end_attempt(ender, ending) == (True, "succeeded")
                async with claimer.transaction():  # the ending is not committed yet
                    during = await claim_for_free_slots(claimer)
            async with claimer.transaction():
                after = await claim_for_free_slots(claimer)
            return during, after

    during, after = asyncio.run(go())
    assert (during.free, len(during.attempts)) == (2, 2), "the claim skipped the worker"
    assert (after.free, len(after.attempts)) == (1, 1)
    assert db.execute(WORKER_LOAD).fetchall() == [("w1", 4)]
    row = db.execute("SELECT count(*) FROM attempts WHERE ended_at IS NULL").fetchone()
    assert row == (4,)


# --- fenced reports -------------------------------------------------------------------------


# Each worker's open attempts as counted by its two counters.
WORKER_LOAD = "SELECT worker_id, open_attempts FROM worker_load ORDER BY worker_id"


def task_row(db: Db, task_id: uuid.UUID) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT status, attempt, worker_id, exit_code, started_at, completed_at FROM tasks"
        " WHERE id = %s",
        (task_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_reports_for_a_stale_attempt_change_nothing(db, database_url):
    add_worker(db, "w1")
    (task,) = add_tasks(db, [-1.0])
    (first,) = run(database_url, claim_for_free_slots).attempts
    # w1 never took it: back to the queue without using a retry, then w2 gets attempt 2.
    refused = AttemptEnd(task, 1, AttemptStatus.FAILED, EndReason.WORKER_REFUSED, worker_id="w1")
    assert run(database_url, lambda c: end_attempt(c, refused)) == (True, "queued")
    db.execute("UPDATE workers SET draining = true WHERE id = 'w1'")
    add_worker(db, "w2")
    db.execute("UPDATE tasks SET run_at = now() WHERE id = %s", (task,))
    (second,) = run(database_url, claim_for_free_slots).attempts
    assert (first.attempt, second.attempt, second.worker_id) == (1, 2, "w2")
    before = task_row(db, task)
    workers_before = db.execute(WORKER_LOAD).fetchall()
    attempts_before = db.execute("SELECT * FROM attempts ORDER BY attempt").fetchall()

    stale_end = AttemptEnd(task, 1, AttemptStatus.SUCCEEDED, None, worker_id="w1", exit_code=0)
    wrong_worker = AttemptEnd(
        task, 2, AttemptStatus.FAILED, EndReason.EXIT_CODE, worker_id="w1", exit_code=1
    )
    assert run(database_url, lambda c: end_attempt(c, stale_end)) == (False, None)
    assert run(database_url, lambda c: end_attempt(c, wrong_worker)) == (False, None)
    stale_start = datetime.now().astimezone()
    assert not run(
        database_url,
        lambda c: mark_attempt_running(c, AttemptKey(task, 1), "w1", stale_start, "x"),
    )
    assert task_row(db, task) == before
    assert db.execute(WORKER_LOAD).fetchall() == workers_before
    assert db.execute("SELECT * FROM attempts ORDER BY attempt").fetchall() == attempts_before

    # The current attempt's own worker is heard.
    current = AttemptEnd(
        task, 2, AttemptStatus.FAILED, EndReason.EXIT_CODE, worker_id="w2", exit_code=7
    )
    assert run(database_url, lambda c: end_attempt(c, current)) == (True, "failed")
    status, attempt, worker_id, exit_code, _, completed_at = task_row(db, task)
    assert (status, attempt, worker_id, exit_code) == ("failed", 2, "w2", 7)
    assert completed_at is not None
    # ...once: a repeat of the same final report is stale too.
    assert run(database_url, lambda c: end_attempt(c, current)) == (False, None)


# --- DDL CHECKs -----------------------------------------------------------------------------

TASK = {
    "id": None,
    "command": "true",
    "status": "queued",
    "scheduled_at": "2030-01-01T00:00:00Z",
    "run_at": "2030-01-01T00:00:00Z",
}
ATTEMPT = {
    "task_id": None,
    "attempt": 1,
    "worker_id": "w1",
    "status": "dispatched",
    "picked_at": "2030-01-01T00:00:01Z",
}
WORKER = {"id": None, "address": "10.0.0.5:8000", "slots": 4, "last_heartbeat_at": "now"}
DONE = {"completed_at": "2030-01-01T00:00:02Z"}


def insert(db: Db, table: str, row: dict[str, Any]) -> None:
    values = {k: (str(uuid.uuid4()) if v is None else v) for k, v in row.items()}
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({k})s" for k in values)
    db.execute(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", values)


@pytest.fixture
def attempt_parent(db: Db) -> dict[str, Any]:
    """A task and worker w1 that attempts may point at."""
    task_id = uuid.uuid4()
    insert(db, "tasks", TASK | {"id": task_id})
    insert(db, "workers", WORKER | {"id": "w1"})
    return {"task_id": task_id}


@pytest.mark.parametrize(
    ("table", "fields"),
    [
        ("tasks", {}),
        ("tasks", {"command": "x" * 65536}),
        ("tasks", {"status": "succeeded", **DONE}),
        ("tasks", {"status": "failed", "failed_at": "2030-01-01T00:00:02Z", **DONE}),
        (
            "tasks",
            {
                "status": "running",
                "worker_id": "w",
                "picked_at": "2030-01-01T00:00:00Z",
                "started_at": "2030-01-01T00:00:00Z",
            },
        ),
        ("workers", {}),
        ("attempts", {}),
        (
            "attempts",
            {"status": "failed", "reason": "exit_code", "ended_at": "2030-01-01T00:00:02Z"},
        ),
    ],
)
def test_valid_rows_are_accepted(db, attempt_parent, table, fields):
    base = {"tasks": TASK, "workers": WORKER, "attempts": ATTEMPT | attempt_parent}[table]
    insert(db, table, base | fields)


@pytest.mark.parametrize(
    ("table", "fields"),
    [
        ("tasks", {"status": "paused"}),
        ("tasks", {"command": ""}),
        ("tasks", {"command": "é" * 32769}),  # 65538 bytes
        ("tasks", {"run_at": "2029-12-31T23:59:59Z"}),  # before scheduled_at
        ("tasks", {"status": "succeeded"}),  # without completed_at
        ("tasks", {"completed_at": "2030-01-01T00:00:02Z"}),  # queued yet completed
        ("tasks", {"status": "failed", **DONE}),  # without failed_at
        ("tasks", {"status": "cancelled", **DONE}),  # without cancelled_at
        ("tasks", {"status": "dispatched", "picked_at": "2030-01-01T00:00:00Z"}),  # no worker
        ("tasks", {"status": "running", "worker_id": "w", "picked_at": "2030-01-01T00:00:00Z"}),
        ("tasks", {"picked_at": "2029-12-31T00:00:00Z"}),  # picked before its run_at
        ("tasks", {"max_retries": 101}),
        ("tasks", {"attempt": -1}),
        ("tasks", {"timeout_seconds": 0}),
        ("tasks", {"idempotency_key": "k"}),  # without request_hash
        ("tasks", {"fire_time": "2030-01-01T00:00:00Z"}),  # a tick without a schedule
        ("workers", {"address": "0.0.0.0:8000"}),
        ("workers", {"address": ""}),
        ("workers", {"slots": -1}),
        ("workers", {"claimed_total": -1}),
        ("workers", {"id": ""}),
        ("attempts", {"status": "lost"}),
        ("attempts", {"attempt": 0}),
        ("attempts", {"status": "running"}),  # without started_at
        ("attempts", {"reason": "bored"}),
        ("attempts", {"status": "failed", "ended_at": "2030-01-01T00:00:02Z"}),  # no reason
        ("attempts", {"ended_at": "2030-01-01T00:00:02Z"}),  # open status yet ended
        ("attempts", {"status": "succeeded", "ended_at": "2029-01-01T00:00:00Z"}),
        ("attempts", {"detail": "x" * 2001}),
    ],
)
def test_check_constraints_reject_invalid_rows(db, attempt_parent, table, fields):
    base = {"tasks": TASK, "workers": WORKER, "attempts": ATTEMPT | attempt_parent}[table]
    with pytest.raises(psycopg.errors.CheckViolation):
        insert(db, table, base | fields)
