"""Numbers about the whole system for GET /stats and /stats/history: each a few index scans,
cheap on a table of millions of finished tasks.

Only what is current is counted whole (the queue, open attempts, the fleet); finished tasks
are counted over recent windows through `tasks_completed_at`, ticks through
`schedule_ticks_recorded_at`. All times are the database clock's.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from store.db import Conn
from store.vocabulary import TaskStatus

# Windows (minutes) over which finished tasks are counted.
WINDOWS = (1, 5, 15, 60)
# Start delays and tick outcomes are taken over this many recent minutes.
RECENT_MINUTES = 5
TICK_MINUTES = 15

FINISHED = tuple(s for s in TaskStatus if s.finished)
FINISHED_COUNTS = ",\n           ".join(
    f"count(*) FILTER (WHERE status = '{status}' AND completed_at > now() - "
    f"make_interval(mins => {minutes})) AS {status}_{minutes}"
    for minutes in WINDOWS
    for status in FINISHED
)
# The whole picture in one statement. Start delay: from when the latest attempt could start
# (run_at: the scheduled time, or a retry's time) to its start on the worker.
STATS = f"""
WITH queue AS (
    SELECT count(*) FILTER (WHERE run_at <= now()) AS due,
           count(*) FILTER (WHERE run_at > now()) AS later,
           extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8
               AS oldest_due_age
    FROM tasks WHERE status = 'queued'
), blocked AS (
    -- waiting for the tasks in their `after`: not backlog until released
    SELECT count(*) AS n FROM tasks WHERE status = 'waiting'
), unserved AS (
    -- due tasks no live worker can take now: their queue is paused, or no worker that is not
    -- lost or draining serves the queue with the labels (counted per queue and labels)
    SELECT coalesce(sum(g.n), 0)::bigint AS n
    FROM (SELECT queue, labels, count(*) AS n FROM tasks
          WHERE status = 'queued' AND run_at <= now() GROUP BY queue, labels) g
    WHERE EXISTS (SELECT 1 FROM queues p WHERE p.name = g.queue AND p.paused)
       OR NOT EXISTS (SELECT 1 FROM workers w
                      WHERE w.lost_at IS NULL AND NOT w.draining
                        AND g.queue = ANY(w.queues) AND w.labels @> g.labels)
), open_attempts AS (
    SELECT count(*) FILTER (WHERE status = 'dispatched') AS dispatched,
           count(*) FILTER (WHERE status = 'running') AS running
    FROM attempts WHERE ended_at IS NULL
), finished AS (
    SELECT {FINISHED_COUNTS}
    FROM tasks
    WHERE completed_at IS NOT NULL
      AND completed_at > now() - make_interval(mins => {max(WINDOWS)})
), delays AS (
    SELECT count(*) AS n,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM started_at - run_at)) AS p
    FROM tasks
    WHERE completed_at IS NOT NULL
      AND completed_at > now() - make_interval(mins => %(recent)s)
      AND started_at IS NOT NULL
), fleet AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE lost_at IS NOT NULL) AS lost,
           count(*) FILTER (WHERE lost_at IS NULL AND draining) AS draining,
           coalesce(sum(w.slots) FILTER (WHERE lost_at IS NULL), 0) AS slots,
           coalesce(sum(l.open_attempts) FILTER (WHERE lost_at IS NULL), 0) AS busy
    FROM workers w JOIN worker_load l ON l.worker_id = w.id
), ticks AS (
    SELECT coalesce(jsonb_object_agg(outcome, n), '{{}}') AS outcomes
    FROM (SELECT outcome, count(*) AS n FROM schedule_ticks
          WHERE recorded_at > now() - make_interval(mins => %(tick_minutes)s)
          GROUP BY outcome) o
)
SELECT now() AS at,
       q.due, q.later, q.oldest_due_age, o.dispatched, o.running, u.n AS unserved,
       b.n AS waiting,
       fin.*,
       d.n AS delay_samples, d.p AS delay_percentiles,
       f.total AS workers, f.lost AS workers_lost, f.draining AS workers_draining,
       f.slots, f.busy, t.outcomes AS tick_outcomes,
       (SELECT reltuples::bigint FROM pg_class WHERE oid = 'tasks'::regclass) AS tasks_estimate
FROM queue q, blocked b, unserved u, open_attempts o, finished fin, delays d, fleet f, ticks t
"""


async def current(conn: Conn) -> dict[str, Any]:
    """One row of STATS: counts (finished ones as `<status>_<minutes>`), start delay
    percentiles (seconds), the fleet and tick outcomes."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"recent": RECENT_MINUTES, "tick_minutes": TICK_MINUTES}
    await cur.execute(STATS, params)
    row = await cur.fetchone()
    assert row is not None  # aggregates without GROUP BY always give one row
    return row


# Per-minute activity over the last `minutes` whole minutes and the current one, oldest first:
# tasks submitted (tasks_created_at), finished by status, and start delays of those finished.
FIRST_MINUTE = "date_trunc('minute', now(), 'UTC') - make_interval(mins => %(minutes)s - 1)"
HISTORY = f"""
WITH minutes AS (
    SELECT generate_series({FIRST_MINUTE}, date_trunc('minute', now(), 'UTC'),
                           interval '1 minute') AS minute
), done AS (
    SELECT date_trunc('minute', completed_at, 'UTC') AS minute,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM started_at - run_at))
               FILTER (WHERE started_at IS NOT NULL) AS delay
    FROM tasks
    WHERE completed_at IS NOT NULL
      AND completed_at >= {FIRST_MINUTE}
    GROUP BY 1
), submitted AS (
    SELECT date_trunc('minute', created_at, 'UTC') AS minute, count(*) AS n
    FROM tasks
    WHERE created_at >= {FIRST_MINUTE}
    GROUP BY 1
)
SELECT m.minute, coalesce(s.n, 0) AS submitted, coalesce(d.succeeded, 0) AS succeeded,
       coalesce(d.failed, 0) AS failed, coalesce(d.cancelled, 0) AS cancelled,
       d.delay[1] AS start_delay_p50, d.delay[2] AS start_delay_p99
FROM minutes m
LEFT JOIN done d ON d.minute = m.minute
LEFT JOIN submitted s ON s.minute = m.minute
ORDER BY m.minute
"""


async def history(conn: Conn, minutes: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(HISTORY, {"minutes": minutes})
    return await cur.fetchall()


# What each /metrics scrape reports, cheap enough to run every few seconds: the queue (read
# through the queued-tasks index), open attempts and the fleet.
GAUGES = """
WITH queue AS (
    SELECT count(*) AS queued,
           count(*) FILTER (WHERE run_at <= now()) AS due,
           coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)
               ::float8 AS oldest_due_age
    FROM tasks WHERE status = 'queued'
), blocked AS (
    SELECT count(*) AS waiting FROM tasks WHERE status = 'waiting'
), open_attempts AS (
    SELECT count(*) FILTER (WHERE status = 'dispatched') AS dispatched,
           count(*) FILTER (WHERE status = 'running') AS running
    FROM attempts WHERE ended_at IS NULL
), fleet AS (
    SELECT count(*) FILTER (WHERE lost_at IS NULL) AS live,
           count(*) FILTER (WHERE lost_at IS NOT NULL) AS lost,
           count(*) FILTER (WHERE lost_at IS NULL AND draining) AS draining,
           coalesce(sum(w.slots) FILTER (WHERE lost_at IS NULL), 0) AS slots,
           coalesce(sum(l.open_attempts) FILTER (WHERE lost_at IS NULL), 0) AS busy
    FROM workers w JOIN worker_load l ON l.worker_id = w.id
)
SELECT * FROM queue, blocked, open_attempts, fleet
"""


async def gauges(conn: Conn) -> dict[str, Any]:
    """One row of GAUGES: queued, due, oldest_due_age (seconds, 0 when none is due), waiting,
    dispatched, running, live, lost, draining, slots and busy."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(GAUGES)
    row = await cur.fetchone()
    assert row is not None  # aggregates without GROUP BY always give one row
    return row
