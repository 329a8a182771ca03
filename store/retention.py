"""Retention: deleting finished tasks (their attempts and stored output go with them) and old
tick-ledger rows, a small batch per statement.

Each statement locks at most `limit` rows, skipping rows another transaction holds, so several
coordinators prune side by side and nothing waits on a pruner. Only finished tasks are touched,
never the queued rows claims lock. The caller owns the transaction (autocommit: one batch per
commit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from store.db import Conn
from store.vocabulary import TaskStatus, sql_list

FINISHED = sql_list(s for s in TaskStatus if s.finished)

# Finished tasks that finished before the cutoff, oldest first, except those a tick still
# names (they go once the ledger lets their tick go); attempts and stored output cascade.
PRUNE_TASKS = f"""
DELETE FROM tasks
WHERE id IN (
    SELECT id FROM tasks t
    WHERE t.completed_at < %(cutoff)s AND t.status IN {FINISHED}
      AND NOT EXISTS (SELECT 1 FROM schedule_ticks k WHERE k.task_id = t.id)
    ORDER BY t.completed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""


async def prune_tasks(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` tasks finished before `cutoff`; returns how many went."""
    cur = await conn.execute(PRUNE_TASKS, {"cutoff": cutoff, "limit": limit})
    return cur.rowcount


# The next schedules in id order after `after` (deleted ones too: their ledger ages as well).
NEXT_SCHEDULES = """
SELECT id FROM schedules WHERE id > %(after)s ORDER BY id LIMIT %(limit)s
"""


async def next_schedules(conn: Conn, after: UUID, limit: int) -> list[UUID]:
    cur = await conn.execute(NEXT_SCHEDULES, {"after": after, "limit": limit})
    return [row[0] for row in await cur.fetchall()]


# Ticks of these schedules that fired before the cutoff and are not among their schedule's
# newest `keep`, oldest first per schedule along the ledger's primary key, `limit` in all.
PRUNE_TICKS = """
DELETE FROM schedule_ticks
WHERE (schedule_id, fire_time) IN (
    SELECT k.schedule_id, k.fire_time
    FROM unnest(%(schedule_ids)s::uuid[]) AS s (id)
    CROSS JOIN LATERAL (
        SELECT fire_time FROM schedule_ticks n
        WHERE n.schedule_id = s.id
        ORDER BY fire_time DESC OFFSET %(keep)s LIMIT 1
    ) AS newest_doomed
    CROSS JOIN LATERAL (
        SELECT schedule_id, fire_time FROM schedule_ticks o
        WHERE o.schedule_id = s.id
          AND o.fire_time <= newest_doomed.fire_time AND o.fire_time < %(cutoff)s
        ORDER BY fire_time
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS k
    LIMIT %(limit)s
)
"""


async def prune_ticks(
    conn: Conn,
    schedule_ids: Sequence[UUID],
    cutoff: datetime,
    keep: int,
    limit: int,
) -> int:
    """Delete up to `limit` old ticks of these schedules beyond their newest `keep`; returns
    how many went."""
    if not schedule_ids:
        return 0
    params = {
        "schedule_ids": list(schedule_ids),
        "cutoff": cutoff,
        "keep": keep,
        "limit": limit,
    }
    cur = await conn.execute(PRUNE_TICKS, params)
    return cur.rowcount
