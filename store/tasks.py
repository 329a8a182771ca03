"""Tasks as the HTTP edge writes and reads them: insert, look up, list, cancel, retry.

Functions take a connection; the caller owns the transaction. The database clock (`now()`)
decides when work is due, so no two machines' clocks are ever compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from uuid import UUID

from store.db import Conn, fetch_all, fetch_one, fetch_value, json_array
from store.models import AttemptRow, NewTask, PageKey, TaskFilter, TaskRow
from store.vocabulary import UNFINISHED_TASK_STATUSES, sql_list
from store.wakeups import WAKEUP_CHANNEL, Topic

# Insert a task; with an idempotency key already taken, insert nothing and return nothing.
INSERT_TASK = """
INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                   timeout_seconds, idempotency_key, request_hash, priority, queue, labels, env,
                   cwd, success_exit_codes, output_cap_bytes, lost_retries, memory_limit_bytes,
                   cpu_limit_seconds, open_files_limit, concurrency_key, concurrency_limit)
SELECT %(id)s, %(command)s, s.at, s.at, %(max_retries)s, %(retry_backoff_seconds)s,
       %(timeout_seconds)s, %(idempotency_key)s, %(request_hash)s, %(priority)s, %(queue)s,
       %(labels)s::jsonb, %(env)s::jsonb, %(cwd)s, %(success_exit_codes)s::smallint[],
       %(output_cap_bytes)s, %(lost_retries)s, %(memory_limit_bytes)s, %(cpu_limit_seconds)s,
       %(open_files_limit)s, %(concurrency_key)s, %(concurrency_limit)s
FROM (SELECT coalesce(
          %(scheduled_at)s::timestamptz,
          now() + make_interval(secs => coalesce(%(delay_seconds)s::float8, 0))) AS at) s
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *
"""


async def insert_task(conn: Conn, task_id: UUID, new: NewTask) -> TaskRow | None:
    """Insert a task; None when its idempotency key is already taken."""
    return await fetch_one(
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
            "priority": new.priority,
            "queue": new.queue,
            "labels": json.dumps(new.labels),
            "lost_retries": new.lost_retries,
            "concurrency_key": new.concurrency_key,
            "concurrency_limit": new.concurrency_limit,
            **execution_params(new),
        },
    )


def execution_params(new: NewTask) -> dict[str, object]:
    """A task's execution settings as statement parameters (env as JSON text)."""
    return {
        "env": json.dumps(new.env),
        "cwd": new.cwd,
        "success_exit_codes": new.success_exit_codes,
        "output_cap_bytes": new.output_cap_bytes,
        "memory_limit_bytes": new.memory_limit_bytes,
        "cpu_limit_seconds": new.cpu_limit_seconds,
        "open_files_limit": new.open_files_limit,
    }


# The INSERT behind the scheduler's group commit, from one JSON array of tasks (TASK_FIELDS of
# each; POST /tasks/batch uses COPY, below): one parameter, where an array per column cost
# psycopg a tenth of a millisecond to adapt on every request. A task whose idempotency key is
# taken is left out (its caller looks the key up).
_INSERT_FROM_JSON = """
    INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                       timeout_seconds, idempotency_key, request_hash, priority, queue, labels,
                       env, cwd, success_exit_codes, output_cap_bytes, lost_retries,
                       memory_limit_bytes, cpu_limit_seconds, open_files_limit, concurrency_key,
                       concurrency_limit)
    SELECT n.id, n.command, s.at, s.at, n.max_retries, n.retry_backoff_seconds,
           n.timeout_seconds, n.idempotency_key, n.request_hash, n.priority, n.queue, n.labels,
           n.env, n.cwd, n.success_exit_codes, n.output_cap_bytes, n.lost_retries,
           n.memory_limit_bytes, n.cpu_limit_seconds, n.open_files_limit, n.concurrency_key,
           n.concurrency_limit
    FROM jsonb_to_recordset(%(tasks)s::jsonb)
         AS n (id uuid, command text, scheduled_at timestamptz, delay_seconds float8,
               max_retries int, retry_backoff_seconds float8, timeout_seconds float8,
               idempotency_key text, request_hash text, priority int, queue text, labels jsonb,
               env jsonb, cwd text, success_exit_codes smallint[], output_cap_bytes int,
               lost_retries int, memory_limit_bytes int8, cpu_limit_seconds int,
               open_files_limit int, concurrency_key text, concurrency_limit int)
    CROSS JOIN LATERAL (
        SELECT coalesce(n.scheduled_at,
                        now() + make_interval(secs => coalesce(n.delay_seconds, 0)))
    ) AS s (at)
    ON CONFLICT (idempotency_key) DO NOTHING
"""
_WAKE = f"SELECT pg_notify('{WAKEUP_CHANNEL}', '{Topic.TASKS}')"

# The fields of a NewTask that _INSERT_FROM_JSON reads, as they are named there.
TASK_FIELDS = (
    "command", "scheduled_at", "delay_seconds", "max_retries", "retry_backoff_seconds",
    "timeout_seconds", "idempotency_key", "request_hash", "priority", "queue", "labels", "env",
    "cwd", "success_exit_codes", "output_cap_bytes", "lost_retries", "memory_limit_bytes",
    "cpu_limit_seconds", "open_files_limit", "concurrency_key", "concurrency_limit",
)


def _tasks_json(new: Sequence[tuple[UUID, NewTask]]) -> dict[str, str]:
    """The parameter of _INSERT_FROM_JSON: every task as one JSON object."""
    rows = [{"id": task_id, **{f: getattr(task, f) for f in TASK_FIELDS}} for task_id, task in new]
    return {"tasks": json_array(rows)}


# Insert tasks and wake the coordinators' dispatchers in one statement: the group commit.
INSERT_TASKS = f"""
WITH new AS ({_INSERT_FROM_JSON} RETURNING *), woke AS ({_WAKE})
SELECT new.* FROM new, woke
"""


async def insert_tasks(conn: Conn, new: Sequence[tuple[UUID, NewTask]]) -> list[TaskRow]:
    """Insert tasks; rows come back in no particular order, none for a key already taken."""
    return await fetch_all(conn, TaskRow, INSERT_TASKS, _tasks_json(new))


# The instant a batch's tasks without scheduled_at are due from: now() is the transaction's
# start, so every statement of the transaction (and an INSERT's own now()) reads the same.
TRANSACTION_NOW = "SELECT now()"


async def transaction_now(conn: Conn) -> datetime:
    now: datetime = await fetch_value(conn, TRANSACTION_NOW)
    return now


# POST /tasks/batch writes its tasks with COPY: these columns, in this order (the others take
# their defaults). COPY formats rows in C and inserts them in bulk, at about half the cost of
# the INSERT from arrays; it has no ON CONFLICT, so keys taken already are looked up first.
COPY_COLUMNS = (
    "id", "command", "scheduled_at", "run_at", "max_retries", "retry_backoff_seconds",
    "timeout_seconds", "idempotency_key", "request_hash", "priority", "queue", "labels", "env",
    "cwd", "success_exit_codes", "output_cap_bytes", "lost_retries", "memory_limit_bytes",
    "cpu_limit_seconds", "open_files_limit", "concurrency_key", "concurrency_limit",
)  # fmt: skip
COPY_TASKS = f"COPY tasks ({', '.join(COPY_COLUMNS)}) FROM STDIN"
# Wake the coordinators' dispatchers when the transaction commits.
WAKE_DISPATCHERS = _WAKE


def _copy_row(
    task_id: UUID | str, task: NewTask, now: datetime, now_text: str
) -> tuple[object, ...]:
    """A task as a row of COPY_COLUMNS; due at `now` plus its delay unless it names a time.
    Times go as ISO 8601 text: most tasks are due `now`, whose text is made once per batch
    (psycopg would format the same datetime twice for every row)."""
    if task.scheduled_at is not None:
        at = task.scheduled_at.isoformat()
    elif task.delay_seconds:
        at = (now + timedelta(seconds=task.delay_seconds)).isoformat()
    else:
        at = now_text
    return (
        task_id, task.command, at, at, task.max_retries, task.retry_backoff_seconds,
        task.timeout_seconds, task.idempotency_key, task.request_hash, task.priority,
        task.queue, _json_object(task.labels), _json_object(task.env), task.cwd,
        pg_int_array(task.success_exit_codes), task.output_cap_bytes, task.lost_retries,
        task.memory_limit_bytes, task.cpu_limit_seconds, task.open_files_limit,
        task.concurrency_key, task.concurrency_limit,
    )  # fmt: skip


def _json_object(value: dict[str, str]) -> str:
    return json.dumps(value) if value else "{}"


async def copy_task_batch(
    conn: Conn, new: Iterable[tuple[UUID | str, NewTask]], now: datetime
) -> None:
    """Write new tasks in bulk (an id may be a UUID or its text), tasks without scheduled_at
    due `now` (transaction_now) plus their delay, and wake the dispatchers on commit. Every
    idempotency key given must be free: one taken (by a transaction that committed meanwhile,
    too) fails the whole statement with UniqueViolation on tasks_idempotency_key_key."""
    now_text = now.isoformat()
    async with conn.cursor().copy(COPY_TASKS) as copy:
        for task_id, task in new:
            await copy.write_row(_copy_row(task_id, task, now, now_text))
    await conn.execute(WAKE_DISPATCHERS)


# The unique constraint on tasks.idempotency_key (migration 001).
IDEMPOTENCY_KEY_CONSTRAINT = "tasks_idempotency_key_key"


# The tasks created earlier under these idempotency keys, with the fingerprint of their request.
SELECT_TASKS_BY_IDEMPOTENCY_KEY = """
SELECT idempotency_key, id, request_hash FROM tasks WHERE idempotency_key = ANY(%(keys)s::text[])
"""


async def get_keyed_tasks(conn: Conn, keys: Sequence[str]) -> dict[str, tuple[UUID, str]]:
    """Idempotency key -> (task id, request fingerprint), for the keys that name a task."""
    cur = await conn.execute(SELECT_TASKS_BY_IDEMPOTENCY_KEY, {"keys": list(keys)})
    return {key: (task_id, digest) for key, task_id, digest in await cur.fetchall()}


def pg_int_array(values: Sequence[int]) -> str:
    """An int array's text form, for an element of a text[] cast per row."""
    if values == [0]:  # the default exit status list: most tasks
        return "{0}"
    return "{" + ",".join(str(int(v)) for v in values) + "}"


# One task by id.
SELECT_TASK = "SELECT * FROM tasks WHERE id = %(id)s"


async def get_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    return await fetch_one(conn, TaskRow, SELECT_TASK, {"id": task_id})


# Tasks by id (ids not found are left out).
SELECT_TASKS_BY_ID = "SELECT * FROM tasks WHERE id = ANY(%(ids)s::uuid[])"


async def get_tasks(conn: Conn, task_ids: Sequence[UUID]) -> list[TaskRow]:
    return await fetch_all(conn, TaskRow, SELECT_TASKS_BY_ID, {"ids": list(task_ids)})


# A page of tasks, newest first, matching every filter given (NULL: no filter), older than a
# cursor: the (created_at, id) of the last task of the previous page, or that task's id.
LIST_TASKS = """
SELECT * FROM tasks
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(worker_id)s::text IS NULL OR worker_id = %(worker_id)s)
  AND (%(schedule_id)s::uuid IS NULL OR schedule_id = %(schedule_id)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(command_prefix)s::text IS NULL OR starts_with(command, %(command_prefix)s))
  AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
  AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
  AND (%(scheduled_after)s::timestamptz IS NULL OR scheduled_at >= %(scheduled_after)s)
  AND (%(scheduled_before)s::timestamptz IS NULL OR scheduled_at < %(scheduled_before)s)
  AND (%(finished_after)s::timestamptz IS NULL OR completed_at >= %(finished_after)s)
  AND (%(finished_before)s::timestamptz IS NULL OR completed_at < %(finished_before)s)
  AND (%(after_created_at)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created_at)s, %(after_id)s::uuid))
  AND (%(before_id)s::uuid IS NULL
       OR (created_at, id) < (SELECT created_at, id FROM tasks WHERE id = %(before_id)s))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""


async def list_tasks(
    conn: Conn, where: TaskFilter, after: PageKey | None, limit: int, before_id: UUID | None = None
) -> list[TaskRow]:
    """A page of tasks newest first: after `after` (the previous page's last task), or after
    the task `before_id`."""
    params = {
        **asdict(where),
        "statuses": [str(s) for s in where.statuses] if where.statuses else None,
        "after_created_at": after.created_at if after else None,
        "after_id": after.id if after else None,
        "before_id": before_id,
        "limit": limit,
    }
    return await fetch_all(conn, TaskRow, LIST_TASKS, params)


# The task created earlier under an idempotency key.
SELECT_TASK_BY_IDEMPOTENCY_KEY = "SELECT * FROM tasks WHERE idempotency_key = %(key)s"


async def get_task_by_idempotency_key(conn: Conn, key: str) -> TaskRow | None:
    return await fetch_one(conn, TaskRow, SELECT_TASK_BY_IDEMPOTENCY_KEY, {"key": key})


# Every attempt of a task, oldest first.
SELECT_ATTEMPTS = "SELECT * FROM attempts WHERE task_id = %(task_id)s ORDER BY attempt"


async def list_attempts(conn: Conn, task_id: UUID) -> list[AttemptRow]:
    return await fetch_all(conn, AttemptRow, SELECT_ATTEMPTS, {"task_id": task_id})


# Lock a task before deciding how to cancel it.
LOCK_TASK = "SELECT * FROM tasks WHERE id = %(id)s FOR UPDATE"


async def lock_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    return await fetch_one(conn, TaskRow, LOCK_TASK, {"id": task_id})


# Cancel tasks that have not finished, and ask the workers of their open attempts to stop them.
CANCEL_TASKS = f"""
WITH stopping AS (
    UPDATE attempts SET cancel_requested_at = now()
    WHERE task_id = ANY(%(ids)s::uuid[]) AND ended_at IS NULL AND cancel_requested_at IS NULL
)
UPDATE tasks SET status = 'cancelled', cancelled_at = now(), completed_at = now(),
                 last_reason = 'cancelled'
WHERE id = ANY(%(ids)s::uuid[]) AND status IN {sql_list(UNFINISHED_TASK_STATUSES)}
RETURNING *
"""


async def cancel_tasks(conn: Conn, task_ids: Sequence[UUID]) -> list[TaskRow]:
    """Cancel the tasks that have not finished (a running attempt is stopped by its
    coordinator's stop loop); returns those cancelled."""
    if not task_ids:
        return []
    return await fetch_all(conn, TaskRow, CANCEL_TASKS, {"ids": list(task_ids)})


# Put a failed task back in the queue as if new: due now, with its retries restored.
REQUEUE_FAILED_TASK = """
UPDATE tasks SET status = 'queued', run_at = greatest(scheduled_at, now()), failures = 0,
                 losses = 0,
                 worker_id = NULL, picked_at = NULL, started_at = NULL, exit_code = NULL,
                 output_path = NULL, completed_at = NULL, failed_at = NULL
WHERE id = %(id)s AND status = 'failed'
RETURNING *
"""


async def requeue_failed_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    return await fetch_one(conn, TaskRow, REQUEUE_FAILED_TASK, {"id": task_id})
