"""Tasks as the HTTP edge writes and reads them: insert, look up, list, cancel, retry.

Functions take a connection; the caller owns the transaction. The database clock (`now()`)
decides when work is due, so no two machines' clocks are ever compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from uuid import UUID

from store.db import Conn, fetch_all, fetch_one
from store.models import AttemptRow, NewTask, PageKey, TaskFilter, TaskRow
from store.vocabulary import UNFINISHED_TASK_STATUSES, sql_list
from store.wakeups import WAKEUP_CHANNEL, Topic

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
        },
    )


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
    SELECT pg_notify('{WAKEUP_CHANNEL}', '{Topic.TASKS}')
)
SELECT new.* FROM new, woke
"""


async def insert_tasks(conn: Conn, new: Sequence[tuple[UUID, NewTask]]) -> list[TaskRow]:
    """Insert tasks that carry no idempotency key; rows come back in no particular order."""
    return await fetch_all(
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
                 worker_id = NULL, picked_at = NULL, started_at = NULL, exit_code = NULL,
                 output_path = NULL, completed_at = NULL, failed_at = NULL
WHERE id = %(id)s AND status = 'failed'
RETURNING *
"""


async def requeue_failed_task(conn: Conn, task_id: UUID) -> TaskRow | None:
    return await fetch_one(conn, TaskRow, REQUEUE_FAILED_TASK, {"id": task_id})
