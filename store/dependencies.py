"""Task dependencies (`after`): the edges a new task waits on, and how it reads them.

A task with unmet dependencies is 'waiting'; the trigger of migration 015 releases or ends it
when the tasks it names end, whatever ends them. Functions take a connection; the caller owns
the transaction, which must lock the named tasks (`lock_tasks`) before adding edges to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from store.db import Conn, fetch_all, fetch_value
from store.models import TaskRow

# Tasks in one `after` list at most (POST /schedule and each item of a batch).
MAX_AFTER = 100

# Lock the tasks that new tasks will name, in id order, so that one ending at the same time
# commits either before (its status is read next) or after (its trigger sees the new edges).
# FOR SHARE, not FOR KEY SHARE: a status change takes FOR NO KEY UPDATE, which only FOR
# SHARE holds off.
LOCK_TASKS = "SELECT id FROM tasks WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR SHARE"


async def lock_tasks(conn: Conn, task_ids: Sequence[UUID]) -> set[UUID]:
    """Lock the named tasks until the transaction ends; the ids of those that exist."""
    if not task_ids:
        return set()
    cur = await conn.execute(LOCK_TASKS, {"ids": list(task_ids)})
    return {row[0] for row in await cur.fetchall()}


# Record the edges of new (queued) tasks and settle each one from what it names now: a
# dependency already succeeded is met; one already failed or cancelled ends the task as
# dependency_failed (the trigger then ends its own dependents); otherwise it waits. Statuses
# are read after lock_tasks, in this statement's own snapshot.
ADD_DEPENDENCIES = """
WITH edges AS (
    INSERT INTO task_dependencies (task_id, depends_on)
    SELECT * FROM unnest(%(task_ids)s::uuid[], %(depends_on)s::uuid[])
    ON CONFLICT DO NOTHING
    RETURNING task_id, depends_on
), counted AS (
    SELECT e.task_id, count(*) FILTER (WHERE x.status <> 'succeeded')::int AS unmet,
           bool_or(x.status IN ('failed', 'cancelled')) AS doomed
    FROM edges e JOIN tasks x ON x.id = e.depends_on
    GROUP BY e.task_id
)
UPDATE tasks t
SET unmet_dependencies = c.unmet,
    status = CASE WHEN c.doomed THEN 'failed' WHEN c.unmet > 0 THEN 'waiting' ELSE t.status END,
    failed_at = CASE WHEN c.doomed THEN now() END,
    completed_at = CASE WHEN c.doomed THEN now() END,
    last_reason = CASE WHEN c.doomed THEN 'dependency_failed' END
FROM counted c
WHERE t.id = c.task_id AND t.status = 'queued'
RETURNING t.*
"""


async def add_dependencies(conn: Conn, edges: Sequence[tuple[UUID, UUID]]) -> dict[UUID, TaskRow]:
    """Add (task, depends on) edges of tasks created in this transaction, and settle them;
    returns the tasks whose row changed (waiting, or ended as dependency_failed)."""
    if not edges:
        return {}
    params = {"task_ids": [t for t, _ in edges], "depends_on": [d for _, d in edges]}
    rows = await fetch_all(conn, TaskRow, ADD_DEPENDENCIES, params)
    return {row.id: row for row in rows}


@dataclass(frozen=True)
class Dependency:
    task_id: UUID  # a task named in `after`
    status: str


# The tasks one task names in `after`, with their status, in id order (a task deleted by
# retention is gone from the list with its edge).
SELECT_DEPENDENCIES = """
SELECT d.depends_on AS task_id, x.status
FROM task_dependencies d JOIN tasks x ON x.id = d.depends_on
WHERE d.task_id = %(id)s
ORDER BY d.depends_on
"""


async def dependencies_of(conn: Conn, task_id: UUID) -> list[Dependency]:
    return await fetch_all(conn, Dependency, SELECT_DEPENDENCIES, {"id": task_id})


# Settle a failed task that an explicit retry just queued again (status 'queued', in this
# transaction) against its dependencies, locked first by lock_tasks: waiting while some have
# not succeeded. Answers the failed or cancelled ones, which the caller refuses.
RESETTLE_RETRIED = """
WITH counted AS (
    SELECT count(*) FILTER (WHERE x.status <> 'succeeded')::int AS unmet,
           coalesce(array_agg(x.id ORDER BY x.id)
                    FILTER (WHERE x.status IN ('failed', 'cancelled')), '{}') AS doomed
    FROM task_dependencies d JOIN tasks x ON x.id = d.depends_on
    WHERE d.task_id = %(id)s
), settled AS (
    UPDATE tasks t
    SET unmet_dependencies = c.unmet,
        status = CASE WHEN c.unmet > 0 THEN 'waiting' ELSE 'queued' END
    FROM counted c
    WHERE t.id = %(id)s AND t.status = 'queued' AND c.unmet > 0
      AND cardinality(c.doomed) = 0
)
SELECT doomed FROM counted
"""


async def resettle_retried(conn: Conn, task_id: UUID) -> list[UUID]:
    """Make a just-requeued task wait for its unmet dependencies; returns those that failed
    or were cancelled (then nothing changed, and the retry must be refused)."""
    failed = await fetch_value(conn, RESETTLE_RETRIED, {"id": task_id})
    return list(failed or [])


# The tasks a task names in `after`, for locking before a retry.
SELECT_DEPENDENCY_IDS = "SELECT depends_on FROM task_dependencies WHERE task_id = %(id)s"


async def dependency_ids(conn: Conn, task_id: UUID) -> list[UUID]:
    cur = await conn.execute(SELECT_DEPENDENCY_IDS, {"id": task_id})
    return [row[0] for row in await cur.fetchall()]
