"""Every SQL statement skiplock runs, each named and commented, with a thin typed function.

Functions take a connection; the caller owns the transaction. The database clock (`now()`) is
the one clock that decides when work is due, so no two machines' clocks are ever compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row

from store.models import (
    CLAIMED_FIELDS,
    AttemptEnd,
    AttemptKey,
    AttemptRow,
    AttemptStart,
    Claim,
    ClaimedAttempt,
    DueSchedule,
    NewTask,
    ScheduleRow,
    ScheduleRun,
    ScheduleSettings,
    StopRequest,
    TaskRow,
    TickRow,
)

Conn = AsyncConnection[Any]
Params = Mapping[str, Any]
R = TypeVar("R")

WAKEUP_CHANNEL = "skiplock_wakeup"
# What a wake-up is about: new due work, cancellations to deliver, schedules to (re)plan.
TOPIC_TASKS = "tasks"
TOPIC_STOPS = "stops"
TOPIC_SCHEDULES = "schedules"
# Retry backoff never exceeds this many seconds, however many failures came before.
RETRY_BACKOFF_CAP_SECONDS = 3600.0
# A worker that refused or could not be reached gets the task again no sooner than this.
REQUEUE_AFTER_REFUSAL_SECONDS = 0.25

# --- schema -----------------------------------------------------------------------------------

# Whether the migrations' version table exists yet (a statement naming a missing table fails
# when parsed, even in a branch that never runs, so this is asked first).
SCHEMA_MIGRATIONS_EXIST = "SELECT to_regclass('schema_migrations') IS NOT NULL"

# The highest migration applied.
SCHEMA_VERSION = "SELECT max(version) FROM schema_migrations"

# Wake every coordinator's loops about the given topics ('' wakes all); only a hint,
# correctness never depends on it.
NOTIFY_WAKEUP = f"SELECT pg_notify('{WAKEUP_CHANNEL}', t) FROM unnest(%(topics)s::text[]) AS t"

# --- tasks ------------------------------------------------------------------------------------

# Insert a task; with an idempotency key already taken, insert nothing and return nothing.
INSERT_TASK = """
INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                   timeout_seconds, idempotency_key, request_hash)
SELECT %(id)s, %(command)s, s.at, s.at, %(max_retries)s, %(retry_backoff_seconds)s,
       %(timeout_seconds)s, %(idempotency_key)s, %(request_hash)s
FROM (SELECT coalesce(
          %(scheduled_at)s::timestamptz,
          now() + make_interval(secs => coalesce(%(delay_seconds)s::float8, 0))) AS at) s
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *
"""

# Insert tasks without idempotency keys (parallel arrays, one element per task) and wake the
# coordinators' dispatchers, all in one statement: the scheduler's group commit.
INSERT_TASKS = f"""
WITH new AS (
    INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                       timeout_seconds)
    SELECT n.id, n.command, s.at, s.at, n.max_retries, n.retry_backoff_seconds,
           n.timeout_seconds
    FROM unnest(%(ids)s::uuid[], %(commands)s::text[], %(scheduled_at)s::timestamptz[],
                %(delay_seconds)s::float8[], %(max_retries)s::int[],
                %(retry_backoff_seconds)s::float8[], %(timeout_seconds)s::float8[])
         AS n (id, command, scheduled_at, delay_seconds, max_retries, retry_backoff_seconds,
               timeout_seconds)
    CROSS JOIN LATERAL (
        SELECT coalesce(n.scheduled_at,
                        now() + make_interval(secs => coalesce(n.delay_seconds, 0)))
    ) AS s (at)
    RETURNING *
), woke AS (
    SELECT pg_notify('{WAKEUP_CHANNEL}', '{TOPIC_TASKS}')
)
SELECT new.* FROM new, woke
"""

# Tasks by id (ids not found are left out).
SELECT_TASKS_BY_ID = "SELECT * FROM tasks WHERE id = ANY(%(ids)s::uuid[])"

# A page of tasks, newest first, optionally of one status, older than the task `before`.
LIST_TASKS = """
SELECT * FROM tasks
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(before)s::uuid IS NULL
       OR (created_at, id) < (SELECT created_at, id FROM tasks WHERE id = %(before)s))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""

# One task by id.
SELECT_TASK = "SELECT * FROM tasks WHERE id = %(id)s"

# The task created earlier under an idempotency key.
SELECT_TASK_BY_IDEMPOTENCY_KEY = "SELECT * FROM tasks WHERE idempotency_key = %(key)s"

# Every attempt of a task, oldest first.
SELECT_ATTEMPTS = "SELECT * FROM attempts WHERE task_id = %(task_id)s ORDER BY attempt"

# Lock a task before deciding how to cancel or retry it.
LOCK_TASK = "SELECT * FROM tasks WHERE id = %(id)s FOR UPDATE"

# Ask the worker of the task's open attempt to stop it.
REQUEST_ATTEMPT_STOP = """
UPDATE attempts SET cancel_requested_at = now()
WHERE task_id = %(task_id)s AND ended_at IS NULL AND cancel_requested_at IS NULL
"""

# Mark a queued or running task cancelled; a running attempt is stopped separately.
CANCEL_TASK = """
UPDATE tasks SET status = 'cancelled', cancelled_at = now(), completed_at = now(),
                 last_reason = 'cancelled'
WHERE id = %(id)s AND status IN ('queued', 'dispatched', 'running')
RETURNING *
"""

# Put a failed task back in the queue as if new: due now, with its retries restored.
REQUEUE_FAILED_TASK = """
UPDATE tasks SET status = 'queued', run_at = greatest(scheduled_at, now()), failures = 0,
                 worker_id = NULL, picked_at = NULL, started_at = NULL, exit_code = NULL,
                 output_path = NULL, completed_at = NULL, failed_at = NULL
WHERE id = %(id)s AND status = 'failed'
RETURNING *
"""


# --- workers ----------------------------------------------------------------------------------

# Register a worker or refresh it from a heartbeat; a heartbeat also ends "lost".
UPSERT_WORKER = """
INSERT INTO workers (id, address, slots, draining, last_heartbeat_at)
VALUES (%(id)s, %(address)s, %(slots)s, %(draining)s, now())
ON CONFLICT (id) DO UPDATE
SET address = EXCLUDED.address, slots = EXCLUDED.slots, draining = EXCLUDED.draining,
    last_heartbeat_at = now(), lost_at = NULL
"""

# Declare workers silent for too long lost; they get no work until they heartbeat again.
DECLARE_LOST_WORKERS = """
UPDATE workers SET lost_at = now()
WHERE lost_at IS NULL AND last_heartbeat_at < now() - make_interval(secs => %(silence)s)
RETURNING id
"""

# Open attempts held by lost workers.
OPEN_ATTEMPTS_OF_LOST_WORKERS = """
SELECT a.task_id, a.attempt
FROM attempts a JOIN workers w ON w.id = a.worker_id
WHERE a.ended_at IS NULL AND w.lost_at IS NOT NULL
ORDER BY a.picked_at
LIMIT %(limit)s
"""

# Of the attempts a worker says it holds, those that are no longer its to run.
REVOKED_ATTEMPTS = """
SELECT h.task_id, h.attempt
FROM unnest(%(task_ids)s::uuid[], %(attempts)s::int[]) AS h (task_id, attempt)
LEFT JOIN attempts a
  ON a.task_id = h.task_id AND a.attempt = h.attempt AND a.worker_id = %(worker_id)s
WHERE a.task_id IS NULL OR a.ended_at IS NOT NULL OR a.cancel_requested_at IS NOT NULL
"""

# Open attempts of a worker that it does not hold, handed over long enough ago that the
# hand-over cannot still be in flight: the worker never got them, or lost them in a restart.
VANISHED_ATTEMPTS = """
SELECT a.task_id, a.attempt, a.status
FROM attempts a
WHERE a.worker_id = %(worker_id)s AND a.ended_at IS NULL
  AND a.picked_at < now() - make_interval(secs => %(grace)s)
  AND NOT EXISTS (
      SELECT 1 FROM unnest(%(task_ids)s::uuid[], %(attempts)s::int[]) AS h (task_id, attempt)
      WHERE h.task_id = a.task_id AND h.attempt = a.attempt)
"""

# --- attempts ---------------------------------------------------------------------------------

# The body shared by the claims below, given a CTE `slots` (worker_id, n): lock due tasks
# (skipping rows other coordinators hold), pair them in due order with the slots, open an
# attempt for each and count it against its worker. Nothing is ever claimed before its run_at.
# Always returns at least one row: `free` (slots offered) and `next_due_in` (seconds until the
# earliest queued task not yet due, NULL when none) on every row, with the claimed attempt's
# columns NULL when nothing was claimed.
_CLAIM_INTO_SLOTS = """
due AS (
    SELECT id, run_at FROM tasks
    WHERE status = 'queued' AND run_at <= now()
    ORDER BY run_at
    LIMIT (SELECT count(*) FROM slots)
    FOR UPDATE SKIP LOCKED
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY run_at, id) AS n FROM due
), claimed AS (
    UPDATE tasks t
    SET status = 'dispatched', attempt = t.attempt + 1, worker_id = s.worker_id,
        picked_at = now(), started_at = NULL, exit_code = NULL, output_path = NULL
    FROM numbered d JOIN slots s ON s.n = d.n
    WHERE t.id = d.id
    RETURNING t.id, t.attempt, t.command, t.timeout_seconds, t.run_at, t.worker_id, t.picked_at
), opened AS (
    INSERT INTO attempts (task_id, attempt, worker_id, status, picked_at)
    SELECT id, attempt, worker_id, 'dispatched', picked_at FROM claimed
), counted AS (
    UPDATE workers w SET open_attempts = w.open_attempts + c.n
    FROM (SELECT worker_id, count(*) AS n FROM claimed GROUP BY worker_id) c
    WHERE w.id = c.worker_id
), hint AS (
    SELECT (SELECT count(*) FROM slots) AS free,
           (SELECT extract(epoch FROM min(run_at) - clock_timestamp())::float8
            FROM tasks WHERE status = 'queued' AND run_at > now()) AS next_due_in
)
SELECT c.id AS task_id, c.attempt, c.command, c.timeout_seconds, c.run_at, c.worker_id,
       w.address, h.free, h.next_due_in
FROM hint h
LEFT JOIN (claimed c JOIN workers w ON w.id = c.worker_id) ON true
"""

# Claim due tasks into the given worker slots, one per array element, in that order.
CLAIM_DUE_TASKS = """
WITH slots AS (
    SELECT s.worker_id, s.n
    FROM unnest(%(slot_workers)s::text[]) WITH ORDINALITY AS s (worker_id, n)
), """ + _CLAIM_INTO_SLOTS

# Claim due tasks into every free slot of the live workers, row-locking the workers so
# concurrent coordinators fill disjoint slots (the lock reads the newest row version, so
# open_attempts is exact). Slots interleave the workers, starting at a rotating one, so a few
# tasks still spread across the fleet.
CLAIM_FOR_FREE_SLOTS = """
WITH available AS (
    SELECT id, slots - open_attempts AS free
    FROM workers
    WHERE lost_at IS NULL AND NOT draining AND open_attempts < slots
      AND last_heartbeat_at > now() - make_interval(secs => %(live_within)s)
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT id, free, row_number() OVER (ORDER BY id) AS pos, count(*) OVER () AS workers
    FROM available
), slots AS (
    SELECT r.id AS worker_id,
           row_number() OVER (ORDER BY g, (r.pos + %(rotation)s) %% r.workers) AS n
    FROM ranked r CROSS JOIN LATERAL generate_series(1, r.free) AS g
), """ + _CLAIM_INTO_SLOTS

# Workers started these attempts: record each unless it is no longer open for that worker.
# Returns the attempts the workers should keep running (open and not being cancelled).
MARK_ATTEMPTS_RUNNING = """
WITH r AS (
    SELECT * FROM unnest(%(task_ids)s::uuid[], %(attempts)s::int[], %(worker_ids)s::text[],
                         %(started_at)s::timestamptz[], %(output_paths)s::text[])
           AS r (task_id, attempt, worker_id, started_at, output_path)
), a AS (
    UPDATE attempts a
    SET status = 'running', started_at = coalesce(a.started_at, r.started_at),
        output_path = r.output_path
    FROM r
    WHERE a.task_id = r.task_id AND a.attempt = r.attempt AND a.worker_id = r.worker_id
      AND a.ended_at IS NULL
    RETURNING a.task_id, a.attempt, a.started_at, a.output_path, a.cancel_requested_at
), t AS (
    UPDATE tasks
    SET status = 'running', started_at = a.started_at, output_path = a.output_path
    FROM a
    WHERE tasks.id = a.task_id AND tasks.attempt = a.attempt
      AND tasks.status IN ('dispatched', 'running')
)
SELECT task_id, attempt FROM a WHERE cancel_requested_at IS NULL
"""

# End attempts (each only while open, and only for its own worker when one is named), free
# their workers' slots, and move each task on: done, cancelled, back to the queue (after a
# backoff when the failure uses up a retry) or failed once retries are exhausted. A task that
# was cancelled or already moved on is left alone. Returns a row per attempt that was open,
# with its task's new status (NULL when the task did not move). Keys must be distinct.
END_ATTEMPTS = """
WITH r AS (
    SELECT * FROM unnest(%(task_ids)s::uuid[], %(attempts)s::int[], %(worker_ids)s::text[],
                         %(statuses)s::text[], %(reasons)s::text[], %(exit_codes)s::int[],
                         %(started_at)s::timestamptz[], %(output_paths)s::text[],
                         %(details)s::text[], %(consumes_retry)s::bool[])
           AS r (task_id, attempt, worker_id, status, reason, exit_code, started_at,
                 output_path, detail, consumes_retry)
), ended AS (
    UPDATE attempts a
    SET status = r.status, reason = r.reason, exit_code = r.exit_code,
        started_at = coalesce(a.started_at, r.started_at),
        output_path = coalesce(r.output_path, a.output_path),
        detail = left(r.detail, 2000), ended_at = greatest(now(), a.picked_at)
    FROM r
    WHERE a.task_id = r.task_id AND a.attempt = r.attempt AND a.ended_at IS NULL
      AND (r.worker_id IS NULL OR a.worker_id = r.worker_id)
    RETURNING a.task_id, a.attempt, a.worker_id, a.started_at, a.output_path, r.status,
              r.reason, r.exit_code, r.consumes_retry
), freed AS (
    UPDATE workers w SET open_attempts = w.open_attempts - f.n
    FROM (SELECT worker_id, count(*) AS n FROM ended GROUP BY worker_id) f
    WHERE w.id = f.worker_id
), decision AS (
    SELECT t.id, e.attempt, e.started_at, e.output_path, e.status, e.reason, e.exit_code,
           e.consumes_retry,
           CASE WHEN e.status = 'succeeded' THEN 'succeeded'
                WHEN e.status = 'cancelled' THEN 'cancelled'
                WHEN NOT e.consumes_retry OR t.failures < t.max_retries THEN 'queued'
                ELSE 'failed' END AS next_status,
           CASE WHEN e.consumes_retry
                THEN least(%(backoff_cap)s,
                           t.retry_backoff_seconds * power(2, t.failures) * (1 + random() * 0.2))
                ELSE %(requeue_after)s END AS delay
    FROM tasks t JOIN ended e ON e.task_id = t.id AND e.attempt = t.attempt
    WHERE t.status IN ('dispatched', 'running')
), moved AS (
    UPDATE tasks t
    SET status = d.next_status,
        failures = t.failures
                   + CASE WHEN d.consumes_retry AND d.status = 'failed' THEN 1 ELSE 0 END,
        run_at = CASE WHEN d.next_status = 'queued'
                      THEN greatest(t.run_at, now() + make_interval(secs => d.delay))
                      ELSE t.run_at END,
        worker_id = CASE WHEN d.next_status = 'queued' THEN NULL ELSE t.worker_id END,
        picked_at = CASE WHEN d.next_status = 'queued' THEN NULL ELSE t.picked_at END,
        started_at = CASE WHEN d.next_status = 'queued' THEN NULL ELSE d.started_at END,
        output_path = CASE WHEN d.next_status = 'queued' THEN NULL ELSE d.output_path END,
        exit_code = CASE WHEN d.next_status = 'queued' THEN NULL ELSE d.exit_code END,
        completed_at = CASE WHEN d.next_status IN ('succeeded', 'failed', 'cancelled')
                            THEN now() END,
        failed_at = CASE WHEN d.next_status = 'failed' THEN now() END,
        cancelled_at = CASE WHEN d.next_status = 'cancelled' THEN now() END,
        last_reason = d.reason
    FROM decision d
    WHERE t.id = d.id AND t.attempt = d.attempt AND t.status IN ('dispatched', 'running')
    RETURNING t.id, t.status
)
SELECT e.task_id, e.attempt, m.status FROM ended e LEFT JOIN moved m ON m.id = e.task_id
"""

# Open attempts whose task was cancelled and whose worker has not been told recently; marks
# them told, skipping rows another coordinator is handling.
TAKE_PENDING_STOPS = """
WITH pending AS (
    SELECT task_id, attempt FROM attempts
    WHERE ended_at IS NULL AND cancel_requested_at IS NOT NULL
      AND (cancel_sent_at IS NULL
           OR cancel_sent_at < now() - make_interval(secs => %(resend_after)s))
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE attempts a SET cancel_sent_at = now()
FROM pending p, workers w
WHERE a.task_id = p.task_id AND a.attempt = p.attempt AND w.id = a.worker_id
RETURNING a.task_id, a.attempt, a.worker_id, w.address
"""


# --- functions --------------------------------------------------------------------------------


def _arrays(items: Sequence[Any], **columns: str) -> dict[str, list[Any]]:
    """Parallel arrays for unnest(): parameter name -> that attribute of every item."""
    return {param: [getattr(item, attr) for item in items] for param, attr in columns.items()}


async def _one(conn: Conn, row: type[R], statement: str, params: Params) -> R | None:
    """The statement's first row as a `row`, or None."""
    cur = conn.cursor(row_factory=class_row(row))
    await cur.execute(statement, params)
    return await cur.fetchone()


async def _all(conn: Conn, row: type[R], statement: str, params: Params) -> list[R]:
    """Every row of the statement as `row`s."""
    cur = conn.cursor(row_factory=class_row(row))
    await cur.execute(statement, params)
    return await cur.fetchall()



async def schema_version(conn: Conn) -> int | None:
    """The highest migration applied; None before the first migration."""
    cur = await conn.execute(SCHEMA_MIGRATIONS_EXIST)
    exists = await cur.fetchone()
    if not exists or not exists[0]:
        return None
    cur = await conn.execute(SCHEMA_VERSION)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def notify_wakeup(conn: Conn, *topics: str) -> None:
    """Notify about each topic; with none, wake every loop."""
    await conn.execute(NOTIFY_WAKEUP, {"topics": list(topics) or [""]})


async def insert_task(conn: Conn, task_id: UUID, new: NewTask) -> TaskRow | None:
    """Insert a task; None when its idempotency key is already taken."""
    return await _one(
        conn,
        TaskRow,
        INSERT_TASK,
        {
            "id": task_id,
            "command": new.command,
            "scheduled_at": new.scheduled_at,
            "delay_seconds": new.delay_seconds,
            "max_retries": new.max_retries,
            "retry_backoff_seconds": new.retry_backoff_seconds,
            "timeout_seconds": new.timeout_seconds,
            "idempotency_key": new.idempotency_key,
            "request_hash": new.request_hash,
        },
    )


async def insert_tasks(conn: Conn, new: Sequence[tuple[UUID, NewTask]]) -> list[TaskRow]:
    """Insert tasks that carry no idempotency key; rows come back in no particular order."""
    return await _all(
        conn,
        TaskRow,
        INSERT_TASKS,
        {
            "ids": [task_id for task_id, _ in new],
            "commands": [t.command for _, t in new],
            "scheduled_at": [t.scheduled_at for _, t in new],
            "delay_seconds": [t.delay_seconds for _, t in new],
            "max_retries": [t.max_retries for _, t in new],
            "retry_backoff_seconds": [t.retry_backoff_seconds for _, t in new],
            "timeout_seconds": [t.timeout_seconds for _, t in new],
        },
    )


async def get_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    return await _one(conn, TaskRow, SELECT_TASK, {"id": task_id})


async def get_tasks(conn: Conn, task_ids: Sequence[UUID]) -> list[TaskRow]:
    return await _all(conn, TaskRow, SELECT_TASKS_BY_ID, {"ids": list(task_ids)})


async def list_tasks(
    conn: Conn, status: str | None, before: UUID | None, limit: int
) -> list[TaskRow]:
    return await _all(
        conn, TaskRow, LIST_TASKS, {"status": status, "before": before, "limit": limit}
    )


async def get_task_by_idempotency_key(conn: Conn, key: str) -> TaskRow | None:
    return await _one(conn, TaskRow, SELECT_TASK_BY_IDEMPOTENCY_KEY, {"key": key})


async def list_attempts(conn: Conn, task_id: UUID) -> list[AttemptRow]:
    return await _all(conn, AttemptRow, SELECT_ATTEMPTS, {"task_id": task_id})


async def lock_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    return await _one(conn, TaskRow, LOCK_TASK, {"id": task_id})


async def cancel_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    """Cancel a task that has not finished and ask its open attempt to stop; None if finished."""
    cur = conn.cursor(row_factory=class_row(TaskRow))
    await cur.execute(REQUEST_ATTEMPT_STOP, {"task_id": task_id})
    await cur.execute(CANCEL_TASK, {"id": task_id})
    return await cur.fetchone()


async def requeue_failed_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    return await _one(conn, TaskRow, REQUEUE_FAILED_TASK, {"id": task_id})


async def upsert_worker(
    conn: Conn, worker_id: str, address: str, slots: int, draining: bool
) -> None:
    await conn.execute(
        UPSERT_WORKER,
        {"id": worker_id, "address": address, "slots": slots, "draining": draining},
    )


def _claim_result(rows: list[dict[str, Any]]) -> Claim:
    first = rows[0]
    claimed = [
        ClaimedAttempt(**{k: row[k] for k in CLAIMED_FIELDS})
        for row in rows
        if row["task_id"] is not None
    ]
    return Claim(claimed, int(first["free"]), first["next_due_in"])


async def claim_due_tasks(conn: Conn, slot_workers: Sequence[str]) -> list[ClaimedAttempt]:
    """Claim at most one due task per entry of slot_workers, assigned to that worker."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(CLAIM_DUE_TASKS, {"slot_workers": list(slot_workers)})
    return _claim_result(await cur.fetchall()).attempts


async def claim_for_free_slots(conn: Conn, live_within: float, rotation: int) -> Claim:
    """Claim due tasks into the free slots of workers heard from within `live_within` s."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(CLAIM_FOR_FREE_SLOTS, {"live_within": live_within, "rotation": rotation})
    return _claim_result(await cur.fetchall())


async def declare_lost_workers(conn: Conn, silence_seconds: float) -> list[str]:
    cur = await conn.execute(DECLARE_LOST_WORKERS, {"silence": silence_seconds})
    return [str(row[0]) for row in await cur.fetchall()]


async def open_attempts_of_lost_workers(conn: Conn, limit: int) -> list[AttemptKey]:
    return await _all(conn, AttemptKey, OPEN_ATTEMPTS_OF_LOST_WORKERS, {"limit": limit})


def _held_params(worker_id: str, held: Sequence[AttemptKey]) -> dict[str, object]:
    return {
        "worker_id": worker_id,
        "task_ids": [h.task_id for h in held],
        "attempts": [h.attempt for h in held],
    }


async def revoked_attempts(
    conn: Conn, worker_id: str, held: Sequence[AttemptKey]
) -> list[AttemptKey]:
    if not held:
        return []
    return await _all(conn, AttemptKey, REVOKED_ATTEMPTS, _held_params(worker_id, held))


async def vanished_attempts(
    conn: Conn, worker_id: str, held: Sequence[AttemptKey], grace_seconds: float
) -> list[tuple[AttemptKey, str]]:
    """Open attempts of the worker it does not hold, with their status."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(VANISHED_ATTEMPTS, {**_held_params(worker_id, held), "grace": grace_seconds})
    return [
        (AttemptKey(row["task_id"], row["attempt"]), str(row["status"]))
        for row in await cur.fetchall()
    ]


async def mark_attempts_running(conn: Conn, starts: Sequence[AttemptStart]) -> set[AttemptKey]:
    """Record that attempts started; returns those the worker should keep running."""
    if not starts:
        return set()
    cur = await conn.execute(
        MARK_ATTEMPTS_RUNNING,
        _arrays(
            starts,
            task_ids="task_id",
            attempts="attempt",
            worker_ids="worker_id",
            started_at="started_at",
            output_paths="output_path",
        ),
    )
    return {AttemptKey(row[0], row[1]) for row in await cur.fetchall()}


async def mark_attempt_running(
    conn: Conn, key: AttemptKey, worker_id: str, started_at: datetime, output_path: str
) -> bool:
    """Record that one attempt started; False when the worker should stop it instead."""
    start = AttemptStart(key.task_id, key.attempt, worker_id, started_at, output_path)
    return key in await mark_attempts_running(conn, [start])


async def end_attempts(
    conn: Conn, ends: Sequence[AttemptEnd]
) -> dict[AttemptKey, str | None]:
    """End open attempts (distinct keys). Returns, for each attempt that was open, its task's
    new status, or None when the task did not move."""
    if not ends:
        return {}
    cur = await conn.execute(
        END_ATTEMPTS,
        {
            **_arrays(
                ends,
                task_ids="task_id",
                attempts="attempt",
                worker_ids="worker_id",
                statuses="status",
                reasons="reason",
                exit_codes="exit_code",
                started_at="started_at",
                output_paths="output_path",
                details="detail",
                consumes_retry="consumes_retry",
            ),
            "backoff_cap": RETRY_BACKOFF_CAP_SECONDS,
            "requeue_after": REQUEUE_AFTER_REFUSAL_SECONDS,
        },
    )
    return {
        AttemptKey(row[0], row[1]): None if row[2] is None else str(row[2])
        for row in await cur.fetchall()
    }


async def end_attempt(conn: Conn, end: AttemptEnd) -> tuple[bool, str | None]:
    """End one open attempt. Returns (whether it was open, the task's new status if it moved)."""
    ended = await end_attempts(conn, [end])
    key = AttemptKey(end.task_id, end.attempt)
    return key in ended, ended.get(key)


async def take_pending_stops(
    conn: Conn, resend_after_seconds: float, limit: int
) -> list[StopRequest]:
    params = {"resend_after": resend_after_seconds, "limit": limit}
    return await _all(conn, StopRequest, TAKE_PENDING_STOPS, params)


# Subscribe this (autocommit) connection to the wake-up channel.
LISTEN_WAKEUP = f"LISTEN {WAKEUP_CHANNEL}"


async def listen_wakeup(conn: Conn) -> None:
    await conn.execute(LISTEN_WAKEUP)


# --- schedules --------------------------------------------------------------------------------

# Tasks in these states are a schedule's unfinished runs, which its overlap policy looks at.
UNFINISHED = "('queued', 'dispatched', 'running')"

# The database clock at this statement: schedules are anchored and previewed by it.
DATABASE_NOW = "SELECT statement_timestamp()"

# Create a schedule; with its name taken by a live schedule, insert nothing.
INSERT_SCHEDULE = """
INSERT INTO schedules (id, name, cron, timezone, command, overlap, catchup_window_seconds,
                       timeout_seconds, max_retries, retry_backoff_seconds, paused,
                       jitter_seconds, created_at, updated_at, anchor_at, active_from,
                       next_fire_at)
VALUES (%(id)s, %(name)s, %(cron)s, %(timezone)s, %(command)s, %(overlap)s,
        %(catchup_window_seconds)s, %(timeout_seconds)s, %(max_retries)s,
        %(retry_backoff_seconds)s, %(paused)s, %(jitter_seconds)s,
        %(at)s, %(at)s, %(at)s, %(at)s, %(next_fire_at)s)
ON CONFLICT (name) WHERE deleted_at IS NULL DO NOTHING
RETURNING *
"""

# One live schedule by id.
SELECT_SCHEDULE = "SELECT * FROM schedules WHERE id = %(id)s AND deleted_at IS NULL"

# Lock a live schedule before changing it or starting a run of it.
LOCK_SCHEDULE = "SELECT * FROM schedules WHERE id = %(id)s AND deleted_at IS NULL FOR UPDATE"

# Live schedules in name order, after a cursor, optionally by name prefix and paused state.
LIST_SCHEDULES = """
SELECT * FROM schedules
WHERE deleted_at IS NULL AND starts_with(name, %(prefix)s)
  AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
  AND (%(after)s::text IS NULL OR name > %(after)s::text)
ORDER BY name
LIMIT %(limit)s
"""

# Replace a schedule's settings. Resuming (paused -> not paused) moves active_from to now, so
# ticks from the pause never run.
UPDATE_SCHEDULE = """
UPDATE schedules
SET name = %(name)s, cron = %(cron)s, timezone = %(timezone)s, command = %(command)s,
    overlap = %(overlap)s, catchup_window_seconds = %(catchup_window_seconds)s,
    timeout_seconds = %(timeout_seconds)s, max_retries = %(max_retries)s,
    retry_backoff_seconds = %(retry_backoff_seconds)s, jitter_seconds = %(jitter_seconds)s,
    active_from = CASE WHEN paused AND NOT %(paused)s THEN greatest(active_from, %(at)s)
                       ELSE active_from END,
    paused = %(paused)s, anchor_at = %(anchor_at)s, next_fire_at = %(next_fire_at)s,
    updated_at = greatest(updated_at, %(at)s)
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING *
"""

# Pause or resume at `at` (NULL: now); resuming moves active_from there, so ticks from the
# pause never run.
SET_SCHEDULE_PAUSED = """
UPDATE schedules
SET active_from = CASE WHEN paused AND NOT %(paused)s
                       THEN greatest(active_from, coalesce(%(at)s::timestamptz, now()))
                       ELSE active_from END,
    paused = %(paused)s, updated_at = greatest(updated_at, coalesce(%(at)s::timestamptz, now()))
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING *
"""

# Delete a schedule: it never fires again; its ledger and runs stay, its name is free.
DELETE_SCHEDULE = """
UPDATE schedules SET deleted_at = now(), updated_at = greatest(updated_at, now())
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id
"""

# A schedule's ticks, newest first, before a cursor, with the current status of their runs.
LIST_TICKS = """
SELECT k.schedule_id, k.fire_time, k.outcome, k.task_id, k.recorded_at, t.status AS task_status
FROM schedule_ticks k LEFT JOIN tasks t ON t.id = k.task_id
WHERE k.schedule_id = %(id)s
  AND (%(before)s::timestamptz IS NULL OR k.fire_time < %(before)s::timestamptz)
ORDER BY k.fire_time DESC
LIMIT %(limit)s
"""

# Claim live schedules with a tick due at `now` (NULL: the database clock), earliest first,
# skipping those another coordinator holds. The lock is held until their ticks are recorded
# and next_fire_at moved past them, so no tick is handled twice.
CLAIM_DUE_SCHEDULES = """
SELECT id, cron, timezone, overlap, paused, catchup_window_seconds, anchor_at, active_from,
       next_fire_at, coalesce(%(now)s::timestamptz, now()) AS now
FROM schedules
WHERE deleted_at IS NULL AND next_fire_at <= coalesce(%(now)s::timestamptz, now())
ORDER BY next_fire_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# Move claimed schedules to their next fire time.
ADVANCE_SCHEDULES = """
UPDATE schedules s SET next_fire_at = n.next_fire_at
FROM unnest(%(ids)s::uuid[], %(next_fire_at)s::timestamptz[]) AS n (id, next_fire_at)
WHERE s.id = n.id
"""

# Seconds until the earliest live schedule is due (<= 0: due now); NULL when there is none.
SECONDS_UNTIL_NEXT_FIRE = """
SELECT extract(epoch FROM min(next_fire_at) - clock_timestamp())::float8
FROM schedules WHERE deleted_at IS NULL
"""

# The unfinished runs of some schedules, locked so they cannot finish under a cancel.
LOCK_UNFINISHED_RUNS = f"""
SELECT schedule_id, id AS task_id FROM tasks
WHERE schedule_id = ANY(%(ids)s::uuid[]) AND status IN {UNFINISHED}
ORDER BY created_at
FOR UPDATE
"""

# Record ticks of claimed schedules and start their runs, in one statement. `intents` is run,
# missed or skipped_paused; a run tick is started, skipped_overlap (policy skip and a run still
# unfinished) or cancelled_previous (its schedule is in `cancelled`, whose runs were just
# cancelled). A tick already in the ledger changes nothing and starts nothing. Each run is
# claimable from its fire time plus up to jitter_seconds, never earlier.
RECORD_TICKS = f"""
WITH planned AS (
    SELECT * FROM unnest(%(schedule_ids)s::uuid[], %(fire_times)s::timestamptz[],
                         %(intents)s::text[], %(task_ids)s::uuid[])
        AS p (schedule_id, fire_time, intent, task_id)
), decided AS (
    SELECT p.schedule_id, p.fire_time, p.task_id, s.command, s.timeout_seconds, s.max_retries,
           s.retry_backoff_seconds, s.jitter_seconds, s.overlap,
           CASE WHEN p.intent <> 'run' THEN p.intent
                WHEN p.schedule_id = ANY(%(cancelled)s::uuid[]) THEN 'cancelled_previous'
                WHEN s.overlap = 'skip' AND EXISTS (
                    SELECT 1 FROM tasks t
                    WHERE t.schedule_id = p.schedule_id AND t.status IN {UNFINISHED})
                THEN 'skipped_overlap'
                ELSE 'started' END AS outcome
    FROM planned p JOIN schedules s ON s.id = p.schedule_id
), ticked AS (
    INSERT INTO schedule_ticks (schedule_id, fire_time, outcome, task_id, recorded_at)
    SELECT schedule_id, fire_time, outcome,
           CASE WHEN outcome IN ('started', 'cancelled_previous') THEN task_id END,
           %(now)s::timestamptz
    FROM decided
    ON CONFLICT (schedule_id, fire_time) DO NOTHING
    RETURNING schedule_id, fire_time, outcome, task_id
), started AS (
    INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                       timeout_seconds, schedule_id, fire_time, exclusive_run)
    SELECT d.task_id, d.command, d.fire_time,
           d.fire_time + make_interval(secs => random() * d.jitter_seconds),
           d.max_retries, d.retry_backoff_seconds, d.timeout_seconds, d.schedule_id,
           d.fire_time, d.overlap <> 'allow'
    FROM ticked k JOIN decided d USING (schedule_id, fire_time)
    WHERE k.task_id IS NOT NULL
)
SELECT outcome, count(*)::int FROM ticked GROUP BY outcome
"""

# A run of a schedule outside its cron (POST /schedules/{id}/trigger): due now, no tick.
INSERT_TRIGGERED_RUN = """
INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                   timeout_seconds, schedule_id, exclusive_run)
SELECT %(task_id)s, command, now(), now(), max_retries, retry_backoff_seconds, timeout_seconds,
       id, overlap <> 'allow'
FROM schedules WHERE id = %(id)s
RETURNING *
"""


async def database_now(conn: Conn) -> datetime:
    cur = await conn.execute(DATABASE_NOW)
    row = await cur.fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


async def insert_schedule(
    conn: Conn, schedule_id: UUID, settings: ScheduleSettings, at: datetime, next_fire_at: datetime
) -> ScheduleRow | None:
    """Create a schedule anchored at `at`; None when a live schedule has the name."""
    params = {**asdict(settings), "id": schedule_id, "at": at, "next_fire_at": next_fire_at}
    return await _one(conn, ScheduleRow, INSERT_SCHEDULE, params)


async def get_schedule(conn: Conn, schedule_id: UUID) -> ScheduleRow | None:
    return await _one(conn, ScheduleRow, SELECT_SCHEDULE, {"id": schedule_id})


async def lock_schedule(conn: Conn, schedule_id: UUID) -> ScheduleRow | None:
    return await _one(conn, ScheduleRow, LOCK_SCHEDULE, {"id": schedule_id})


async def list_schedules(
    conn: Conn, prefix: str, paused: bool | None, after: str | None, limit: int
) -> list[ScheduleRow]:
    params = {"prefix": prefix, "paused": paused, "after": after, "limit": limit}
    return await _all(conn, ScheduleRow, LIST_SCHEDULES, params)


async def update_schedule(
    conn: Conn,
    schedule_id: UUID,
    settings: ScheduleSettings,
    at: datetime,
    anchor_at: datetime,
    next_fire_at: datetime,
) -> ScheduleRow | None:
    """Replace the settings of a live schedule (raises UniqueViolation for a taken name)."""
    params = {**asdict(settings), "id": schedule_id, "at": at, "anchor_at": anchor_at}
    return await _one(conn, ScheduleRow, UPDATE_SCHEDULE, params | {"next_fire_at": next_fire_at})


async def set_schedule_paused(
    conn: Conn, schedule_id: UUID, paused: bool, at: datetime | None = None
) -> ScheduleRow | None:
    return await _one(
        conn, ScheduleRow, SET_SCHEDULE_PAUSED, {"id": schedule_id, "paused": paused, "at": at}
    )


async def delete_schedule(conn: Conn, schedule_id: UUID) -> bool:
    cur = await conn.execute(DELETE_SCHEDULE, {"id": schedule_id})
    return await cur.fetchone() is not None


async def list_ticks(
    conn: Conn, schedule_id: UUID, before: datetime | None, limit: int
) -> list[TickRow]:
    return await _all(
        conn, TickRow, LIST_TICKS, {"id": schedule_id, "before": before, "limit": limit}
    )


async def claim_due_schedules(conn: Conn, now: datetime | None, limit: int) -> list[DueSchedule]:
    return await _all(conn, DueSchedule, CLAIM_DUE_SCHEDULES, {"now": now, "limit": limit})


async def advance_schedules(conn: Conn, next_fire_at: dict[UUID, datetime]) -> None:
    await conn.execute(
        ADVANCE_SCHEDULES,
        {"ids": list(next_fire_at), "next_fire_at": list(next_fire_at.values())},
    )


async def seconds_until_next_fire(conn: Conn) -> float | None:
    cur = await conn.execute(SECONDS_UNTIL_NEXT_FIRE)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def lock_unfinished_runs(conn: Conn, schedule_ids: Sequence[UUID]) -> list[ScheduleRun]:
    return await _all(conn, ScheduleRun, LOCK_UNFINISHED_RUNS, {"ids": list(schedule_ids)})


async def record_ticks(
    conn: Conn,
    ticks: Sequence[tuple[UUID, datetime, str]],
    cancelled: Sequence[UUID],
    now: datetime,
) -> dict[str, int]:
    """Record (schedule_id, fire_time, intent) ticks; returns how many got each outcome."""
    cur = await conn.execute(
        RECORD_TICKS,
        {
            "schedule_ids": [t[0] for t in ticks],
            "fire_times": [t[1] for t in ticks],
            "intents": [t[2] for t in ticks],
            "task_ids": [uuid4() for _ in ticks],
            "cancelled": list(cancelled),
            "now": now,
        },
    )
    return {str(outcome): int(n) for outcome, n in await cur.fetchall()}


async def insert_triggered_run(conn: Conn, schedule_id: UUID) -> TaskRow | None:
    return await _one(conn, TaskRow, INSERT_TRIGGERED_RUN, {"id": schedule_id, "task_id": uuid4()})


async def cancel_unfinished_runs(conn: Conn, schedule_ids: Sequence[UUID]) -> list[ScheduleRun]:
    """Cancel the unfinished runs of these schedules (stopping attempts on their workers)."""
    runs = await lock_unfinished_runs(conn, schedule_ids)
    for run in runs:
        await cancel_task(conn, run.task_id)
    return runs
