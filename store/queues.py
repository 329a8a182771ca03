"""Queues: pause and resume them, limit their running tasks, list them with their backlog,
and say why a task waits.

A queue exists while tasks or workers name it; the `queues` table holds only whether it is
paused and its limit. Functions take a connection; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from store.db import Conn, fetch_all, fetch_value

# Workers that take work: not declared lost and not draining.
_LIVE = "w.lost_at IS NULL AND NOT w.draining"


@dataclass(frozen=True)
class QueueRow:
    name: str
    paused: bool
    max_running: int | None  # at most this many run at once; None: no limit
    queued: int  # queued, due or not
    due: int  # queued and due now
    running: int  # handed to a worker and not ended
    workers: int  # live workers that serve it
    waiting: int  # waiting for the tasks in their `after`


# Pause or resume a queue (the claim skips a paused queue's tasks; running ones go on).
SET_QUEUE_PAUSED = """
INSERT INTO queues (name, paused) VALUES (%(name)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now()
"""


async def set_paused(conn: Conn, name: str, paused: bool) -> None:
    await conn.execute(SET_QUEUE_PAUSED, {"name": name, "paused": paused})


# Change the limit of a queue that has one: its running count is kept exact already.
CHANGE_QUEUE_LIMIT = """
UPDATE queues SET max_running = %(max_running)s, updated_at = now()
WHERE name = %(name)s AND max_running IS NOT NULL
"""

# Wait for every claim and end of an attempt in progress to commit, and hold off new ones until
# this transaction ends: SHARE conflicts with the ROW EXCLUSIVE lock that inserting or updating
# attempts takes. A statement takes its snapshot after its locks, so each claim or end is
# either in the count below or sees the limit and counts itself.
LOCK_ATTEMPTS = "LOCK TABLE attempts IN SHARE MODE"
# How long setting a limit may wait for that lock (claims and ends queue behind it meanwhile).
LOCK_ATTEMPTS_TIMEOUT = "SET LOCAL lock_timeout = '5s'"

# Give a queue a limit, and count its open attempts (under LOCK_ATTEMPTS) as its running tasks.
SET_QUEUE_LIMIT = """
INSERT INTO queues (name, max_running, running)
SELECT %(name)s, %(max_running)s, count(*)
FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE a.ended_at IS NULL AND t.queue = %(name)s
ON CONFLICT (name) DO UPDATE
SET max_running = EXCLUDED.max_running, running = EXCLUDED.running, updated_at = now()
"""

# Lift a queue's limit; its running tasks are no longer counted. Like a resume, it leaves the
# queue a row (so it is listed) even when it had none.
CLEAR_QUEUE_LIMIT = """
INSERT INTO queues (name) VALUES (%(name)s)
ON CONFLICT (name) DO UPDATE SET max_running = NULL, running = 0, updated_at = now()
"""


async def set_limit(conn: Conn, name: str, max_running: int | None) -> None:
    """Limit the queue to `max_running` running tasks (None: no limit). Run in a transaction:
    giving a queue its first limit holds off every claim and end until it commits."""
    params = {"name": name, "max_running": max_running}
    if max_running is None:
        await conn.execute(CLEAR_QUEUE_LIMIT, params)
        return
    cur = await conn.execute(CHANGE_QUEUE_LIMIT, params)
    if cur.rowcount:
        return
    await conn.execute(LOCK_ATTEMPTS_TIMEOUT)
    await conn.execute(LOCK_ATTEMPTS)
    await conn.execute(SET_QUEUE_LIMIT, params)


# Every queue a task, a worker or a pause names, with its backlog, in name order.
LIST_QUEUES = f"""
WITH waiting AS (
    SELECT queue AS name, count(*) AS queued, count(*) FILTER (WHERE run_at <= now()) AS due
    FROM tasks WHERE status = 'queued' GROUP BY queue
), blocked AS (
    SELECT queue AS name, count(*) AS waiting FROM tasks WHERE status = 'waiting' GROUP BY queue
), running AS (
    SELECT t.queue AS name, count(*) AS running
    FROM attempts a JOIN tasks t ON t.id = a.task_id
    WHERE a.ended_at IS NULL GROUP BY t.queue
), served AS (
    SELECT q AS name, count(*) AS workers
    FROM workers w CROSS JOIN LATERAL unnest(w.queues) AS q
    WHERE {_LIVE} GROUP BY q
), names AS (
    SELECT name FROM waiting UNION SELECT name FROM running UNION SELECT name FROM served
    UNION SELECT name FROM queues UNION SELECT name FROM blocked
)
SELECT n.name, coalesce(p.paused, false) AS paused, p.max_running,
       coalesce(w.queued, 0)::int AS queued,
       coalesce(w.due, 0)::int AS due, coalesce(r.running, 0)::int AS running,
       coalesce(s.workers, 0)::int AS workers, coalesce(b.waiting, 0)::int AS waiting
FROM names n
LEFT JOIN queues p USING (name) LEFT JOIN waiting w USING (name)
LEFT JOIN running r USING (name) LEFT JOIN served s USING (name)
LEFT JOIN blocked b USING (name)
ORDER BY n.name
"""


async def list_queues(conn: Conn) -> list[QueueRow]:
    return await fetch_all(conn, QueueRow, LIST_QUEUES, {})


# Queued tasks per queue (due or not), for backpressure: read from the claim's partial index.
QUEUED_BY_QUEUE = "SELECT queue, count(*)::int FROM tasks WHERE status = 'queued' GROUP BY queue"


async def queued_by_queue(conn: Conn) -> dict[str, int]:
    cur = await conn.execute(QUEUED_BY_QUEUE)
    return {str(name): int(n) for name, n in await cur.fetchall()}


# Why a due queued task is not running: its queue is paused or at its limit, no live worker
# serves the queue, none of those has its labels, or (NULL) it only waits for a free slot. NULL
# too when the task is not both queued and due.
WAITING_FOR = f"""
SELECT CASE
    WHEN t.status <> 'queued' OR t.run_at > now() THEN NULL
    WHEN p.paused THEN 'queue ' || t.queue || ' is paused'
    WHEN p.running >= p.max_running
        THEN 'queue ' || t.queue || ' is at its limit of ' || p.max_running || ' running'
    WHEN NOT EXISTS (SELECT 1 FROM workers w WHERE {_LIVE} AND t.queue = ANY(w.queues))
        THEN 'no live worker serves queue ' || t.queue
    WHEN NOT EXISTS (SELECT 1 FROM workers w
                     WHERE {_LIVE} AND t.queue = ANY(w.queues) AND w.labels @> t.labels)
        THEN 'no live worker of queue ' || t.queue || ' has the labels ' || t.labels::text
END
FROM tasks t LEFT JOIN queues p ON p.name = t.queue
WHERE t.id = %(id)s
"""


async def waiting_for(conn: Conn, task_id: UUID) -> str | None:
    reason: str | None = await fetch_value(conn, WAITING_FOR, {"id": task_id})
    return reason
