"""Dispatch: workers and their heartbeats, claims, attempt starts and ends, stops.

Functions take a connection; the caller owns the transaction. The database clock (`now()`)
decides when work is due, so no two machines' clocks are ever compared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.rows import class_row, dict_row

from common.routing import DEFAULT_QUEUE
from store import outputs
from store.db import Conn, fetch_all, json_records, unnest_arrays
from store.models import (
    CLAIMED_FIELDS,
    AttemptEnd,
    AttemptKey,
    AttemptStart,
    Claim,
    ClaimedAttempt,
    EndedAttempt,
    OutputDelta,
    StartedAttempt,
    StopRequest,
)
from store.vocabulary import EndReason, RetryBudget, sql_list

# Retry backoff never exceeds this many seconds, however many failures came before.
RETRY_BACKOFF_CAP_SECONDS = 3600.0
# A worker that refused or could not be reached gets the task again no sooner than this.
REQUEUE_AFTER_REFUSAL_SECONDS = 0.25
# The end reasons that use up a retry, as decided by EndReason.uses_retry.
USES_RETRY = sql_list(reason for reason in EndReason if reason.uses_retry)
# The end reasons paid for by the lost budget first (EndReason.budget).
LOST_REASONS = sql_list(reason for reason in EndReason if reason.budget == RetryBudget.LOST)

# --- workers ----------------------------------------------------------------------------------

# Register a worker or refresh it from a heartbeat; a heartbeat also ends "lost".
UPSERT_WORKER = """
INSERT INTO workers (id, address, slots, draining, last_heartbeat_at, queues, labels)
VALUES (%(id)s, %(address)s, %(slots)s, %(draining)s, now(), %(queues)s, %(labels)s::jsonb)
ON CONFLICT (id) DO UPDATE
SET address = EXCLUDED.address, slots = EXCLUDED.slots, draining = EXCLUDED.draining,
    last_heartbeat_at = now(), lost_at = NULL, queues = EXCLUDED.queues,
    labels = EXCLUDED.labels
"""


async def upsert_worker(
    conn: Conn,
    worker_id: str,
    address: str,
    slots: int,
    draining: bool,
    queues: Sequence[str] = (DEFAULT_QUEUE,),
    labels: Mapping[str, str] | None = None,
) -> None:
    """Queues sorted without repeats, so workers that serve the same ones form one class."""
    await conn.execute(
        UPSERT_WORKER,
        {
            "id": worker_id,
            "address": address,
            "slots": slots,
            "draining": draining,
            "queues": sorted(set(queues)) or [DEFAULT_QUEUE],
            "labels": json.dumps(dict(labels or {}), sort_keys=True),
        },
    )


# Declare workers silent for too long lost; they get no work until they heartbeat again.
DECLARE_LOST_WORKERS = """
UPDATE workers SET lost_at = now()
WHERE lost_at IS NULL AND last_heartbeat_at < now() - make_interval(secs => %(silence)s)
RETURNING id
"""


async def declare_lost_workers(conn: Conn, silence_seconds: float) -> list[str]:
    cur = await conn.execute(DECLARE_LOST_WORKERS, {"silence": silence_seconds})
    return [str(row[0]) for row in await cur.fetchall()]


# Open attempts held by lost workers.
OPEN_ATTEMPTS_OF_LOST_WORKERS = """
SELECT a.task_id, a.attempt
FROM attempts a JOIN workers w ON w.id = a.worker_id
WHERE a.ended_at IS NULL AND w.lost_at IS NOT NULL
ORDER BY a.picked_at
LIMIT %(limit)s
"""


async def open_attempts_of_lost_workers(conn: Conn, limit: int) -> list[AttemptKey]:
    return await fetch_all(conn, AttemptKey, OPEN_ATTEMPTS_OF_LOST_WORKERS, {"limit": limit})


def _held_params(worker_id: str, held: Sequence[AttemptKey]) -> dict[str, object]:
    return {"worker_id": worker_id, **unnest_arrays(held, task_ids="task_id", attempts="attempt")}


# Of the attempts a worker says it holds, those that are no longer its to run.
REVOKED_ATTEMPTS = """
SELECT h.task_id, h.attempt
FROM unnest(%(task_ids)s::uuid[], %(attempts)s::int[]) AS h (task_id, attempt)
LEFT JOIN attempts a
  ON a.task_id = h.task_id AND a.attempt = h.attempt AND a.worker_id = %(worker_id)s
WHERE a.task_id IS NULL OR a.ended_at IS NOT NULL OR a.cancel_requested_at IS NOT NULL
"""


async def revoked_attempts(
    conn: Conn, worker_id: str, held: Sequence[AttemptKey]
) -> list[AttemptKey]:
    if not held:
        return []
    return await fetch_all(conn, AttemptKey, REVOKED_ATTEMPTS, _held_params(worker_id, held))


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


# --- claims -----------------------------------------------------------------------------------

# Claim due tasks into every free slot of the live workers, row-locking the workers so
# concurrent coordinators fill disjoint slots. A worker's open attempts are its claimed_total
# (read at its newest version under the lock, so exact) less its ended_total, read from the
# statement's snapshot in worker_endings, a row endings update and no claim locks (migration
# 018): an ending in progress never hides a worker from a claim, and as ended_total only
# grows, a stale read only offers fewer slots than are free, never more. Workers that serve the
# same queues with the same labels form a class; a class's slots interleave its workers, starting
# at a rotating one, so a few tasks still spread across them. For each class and each queue it
# serves (unless paused), the due tasks it may run (the class has every label the task asks for)
# are locked in claim order (priority with aging: claim_rank, migration 008), skipping rows other
# coordinators hold; the class keeps the best of them for its free slots, a task wanted by two
# classes goes to one, and each gets an attempt counted against its worker. A task with a
# concurrency_key runs only while fewer than its concurrency_limit tasks of the key do: the key's
# counter row is locked (so coordinators claiming at once read its newest value; a key another
# coordinator holds is skipped this time) and counts the claimed attempts. A queue with a limit
# (max_running) offers only as many tasks as it has room for by its counter row, which is then
# locked the same way, checked against the tasks past their keys and counted up; a queue without
# one has no counter, so its claims write no shared row. Nothing is ever claimed before its
# run_at, and a task no live worker can take stays queued. Always returns at least one row: `free`
# (slots offered), `more` (some class found as many tasks as it had slots: claim again) and
# `next_due_in` (seconds until the earliest queued task not yet due, NULL when none) on every row,
# with the claimed attempt's columns NULL when nothing was claimed.
CLAIM_FOR_FREE_SLOTS = """
WITH available AS (
    SELECT w.id, w.slots - (w.claimed_total - e.ended_total) AS free, w.queues, w.labels
    FROM workers w JOIN worker_endings e ON e.worker_id = w.id
    WHERE w.lost_at IS NULL AND NOT w.draining AND w.claimed_total - e.ended_total < w.slots
      AND w.last_heartbeat_at > now() - make_interval(secs => %(live_within)s)
    FOR UPDATE OF w SKIP LOCKED
), ranked AS (
    SELECT id, free, queues, labels,
           row_number() OVER (PARTITION BY queues, labels ORDER BY id) AS pos,
           count(*) OVER (PARTITION BY queues, labels) AS workers
    FROM available
), slots AS (
    SELECT r.id AS worker_id, r.queues, r.labels,
           row_number() OVER (PARTITION BY r.queues, r.labels
                              ORDER BY g, (r.pos + %(rotation)s) %% r.workers) AS n
    FROM ranked r CROSS JOIN LATERAL generate_series(1, r.free) AS g
), classes AS (
    SELECT queues, labels, count(*) AS free FROM slots GROUP BY queues, labels
), offered AS (
    SELECT c.queues, c.labels, c.free, d.id, d.rank, d.ckey, d.climit, q.name AS queue,
           p.max_running AS qlimit
    FROM classes c
    CROSS JOIN LATERAL unnest(c.queues) AS q (name)
    LEFT JOIN queues p ON p.name = q.name
    CROSS JOIN LATERAL (
        SELECT t.id, claim_rank(t.run_at, t.priority) AS rank, t.concurrency_key AS ckey,
               t.concurrency_limit AS climit
        FROM tasks t
        WHERE t.status = 'queued' AND t.queue = q.name AND t.run_at <= now()
          AND c.labels @> t.labels
          AND (t.concurrency_key IS NULL
               OR NOT EXISTS (SELECT 1 FROM concurrency_keys f WHERE f.key = t.concurrency_key
                                AND f.running >= t.concurrency_limit))
        ORDER BY claim_rank(t.run_at, t.priority)
        LIMIT CASE WHEN p.max_running IS NULL THEN c.free
                   ELSE least(c.free, greatest(p.max_running - p.running, 0)) END
        FOR UPDATE SKIP LOCKED
    ) d
    WHERE p.paused IS NOT TRUE
), best AS (
    SELECT queues, labels, free, id, rank, ckey, climit, queue, qlimit,
           row_number() OVER (PARTITION BY queues, labels ORDER BY rank, id) AS k
    FROM offered
), deduped AS (
    SELECT DISTINCT ON (id) id, rank, queues, labels, ckey, climit, queue, qlimit FROM best
    WHERE k <= free
    ORDER BY id, k
), keyed AS (
    SELECT key, running FROM concurrency_keys
    WHERE key IN (SELECT ckey FROM deduped)
    FOR UPDATE SKIP LOCKED
), admitted AS (
    SELECT d.id, d.rank, d.queues, d.labels, d.queue, d.qlimit
    FROM (SELECT *, row_number() OVER (PARTITION BY ckey ORDER BY rank, id) AS kn
          FROM deduped) d
    LEFT JOIN keyed k ON k.key = d.ckey
    WHERE d.ckey IS NULL OR k.running + d.kn <= d.climit
), limited AS (
    SELECT name, max_running - running AS room FROM queues
    WHERE name IN (SELECT queue FROM admitted WHERE qlimit IS NOT NULL)
      AND max_running IS NOT NULL
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT d.id, d.rank, d.queues, d.labels
    FROM (SELECT *, row_number() OVER (PARTITION BY queue ORDER BY rank, id) AS qn
          FROM admitted) d
    LEFT JOIN limited l ON l.name = d.queue
    WHERE d.qlimit IS NULL OR d.qn <= l.room
), numbered AS (
    SELECT id, queues, labels,
           row_number() OVER (PARTITION BY queues, labels ORDER BY rank, id) AS n
    FROM chosen
), claimed AS (
    UPDATE tasks t
    SET status = 'dispatched', attempt = t.attempt + 1, worker_id = s.worker_id,
        picked_at = now(), started_at = NULL, exit_code = NULL, output_path = NULL
    FROM numbered d
    JOIN slots s ON s.queues = d.queues AND s.labels = d.labels AND s.n = d.n
    WHERE t.id = d.id
    RETURNING t.id, t.attempt, t.command, t.timeout_seconds, t.run_at, t.worker_id, t.picked_at,
              t.schedule_id, t.env, t.cwd, t.success_exit_codes, t.output_cap_bytes,
              t.memory_limit_bytes, t.cpu_limit_seconds, t.open_files_limit, t.concurrency_key,
              t.queue
), opened AS (
    INSERT INTO attempts (task_id, attempt, worker_id, status, picked_at)
    SELECT id, attempt, worker_id, 'dispatched', picked_at FROM claimed
), counted AS (
    UPDATE workers w SET claimed_total = w.claimed_total + c.n
    FROM (SELECT worker_id, count(*) AS n FROM claimed GROUP BY worker_id) c
    WHERE w.id = c.worker_id
), counted_keys AS (
    UPDATE concurrency_keys k SET running = k.running + c.n
    FROM (SELECT concurrency_key AS key, count(*) AS n FROM claimed
          WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key) c
    WHERE k.key = c.key
), counted_queues AS (
    UPDATE queues q SET running = q.running + c.n
    FROM (SELECT queue, count(*) AS n FROM claimed GROUP BY queue) c
    WHERE q.name = c.queue AND q.max_running IS NOT NULL
), hint AS (
    SELECT (SELECT count(*) FROM slots) AS free,
           EXISTS (SELECT 1 FROM best WHERE k = free) AS more,
           (SELECT extract(epoch FROM min(run_at) - clock_timestamp())::float8
            FROM tasks WHERE status = 'queued' AND run_at > now()) AS next_due_in
)
SELECT c.id AS task_id, c.attempt, c.command, c.timeout_seconds, c.run_at, c.worker_id,
       w.address, c.schedule_id, c.env, c.cwd, c.success_exit_codes, c.output_cap_bytes,
       c.memory_limit_bytes, c.cpu_limit_seconds, c.open_files_limit,
       h.free, h.more, h.next_due_in
FROM hint h
LEFT JOIN (claimed c JOIN workers w ON w.id = c.worker_id) ON true
"""


async def claim_for_free_slots(conn: Conn, live_within: float, rotation: int) -> Claim:
    """Claim due tasks into the free slots of workers heard from within `live_within` s."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(CLAIM_FOR_FREE_SLOTS, {"live_within": live_within, "rotation": rotation})
    rows: list[dict[str, Any]] = await cur.fetchall()
    claimed = [
        ClaimedAttempt(**{k: row[k] for k in CLAIMED_FIELDS})
        for row in rows
        if row["task_id"] is not None
    ]
    first = rows[0]
    return Claim(claimed, int(first["free"]), first["next_due_in"], bool(first["more"]))


# --- attempts ---------------------------------------------------------------------------------

# Workers started these attempts: record each unless it is no longer open for that worker.
# Returns each recorded attempt, whether its worker should keep running it (open and not being
# cancelled) and whether this report started it (a repeated report finds it running already).
MARK_ATTEMPTS_RUNNING = """
WITH r AS (
    SELECT * FROM unnest(%(task_ids)s::uuid[], %(attempts)s::int[], %(worker_ids)s::text[],
                         %(started_at)s::timestamptz[], %(output_paths)s::text[])
           AS r (task_id, attempt, worker_id, started_at, output_path)
), a AS (
    UPDATE attempts a
    SET status = 'running', started_at = coalesce(a.started_at, r.started_at),
        output_path = r.output_path
    FROM r, attempts old
    WHERE a.task_id = r.task_id AND a.attempt = r.attempt AND a.worker_id = r.worker_id
      AND a.ended_at IS NULL AND old.task_id = a.task_id AND old.attempt = a.attempt
    RETURNING a.task_id, a.attempt, a.worker_id, a.started_at, a.output_path,
              a.cancel_requested_at, old.status = 'dispatched' AS first
), t AS (
    UPDATE tasks
    SET status = 'running', started_at = a.started_at, output_path = a.output_path
    FROM a
    WHERE tasks.id = a.task_id AND tasks.attempt = a.attempt
      AND tasks.status IN ('dispatched', 'running')
)
SELECT a.task_id, a.attempt, a.worker_id, k.schedule_id, k.run_at, a.started_at,
       a.cancel_requested_at IS NULL AS keep, a.first
FROM a JOIN tasks k ON k.id = a.task_id
"""


async def mark_attempts_running(
    conn: Conn, starts: Sequence[AttemptStart]
) -> list[StartedAttempt]:
    """Record that attempts started; returns the attempts recorded."""
    if not starts:
        return []
    cur = conn.cursor(row_factory=class_row(StartedAttempt))
    await cur.execute(
        MARK_ATTEMPTS_RUNNING,
        unnest_arrays(
            starts,
            task_ids="task_id",
            attempts="attempt",
            worker_ids="worker_id",
            started_at="started_at",
            output_paths="output_path",
        ),
    )
    return await cur.fetchall()


# End attempts (each only while open, and only for its own worker when one is named) at the time
# their worker saw them end (kept between the hand-over and now), free their workers' slots
# (worker_endings, never the workers rows claims lock), their concurrency keys and their queues'
# counts (limited queues only), and move each task on: done, cancelled, back to the queue (after a
# backoff when the reason uses up a retry) or failed once retries are exhausted. A task that was
# cancelled or already moved on is left alone. Returns a row per attempt that was open: how it
# ended, and its task's new status (NULL when the task did not move), and whether its start was
# only learnt from this ending (the worker's start report never came). Keys must be distinct.
END_ATTEMPT_CTES = f"""
r AS (
    SELECT * FROM jsonb_to_recordset(%(ends)s::jsonb)
           AS r (task_id uuid, attempt int, worker_id text, status text, reason text,
                 exit_code int, started_at timestamptz, finished_at timestamptz,
                 output_path text, detail text)
), ended AS (
    UPDATE attempts a
    SET status = r.status, reason = r.reason, exit_code = r.exit_code,
        started_at = coalesce(a.started_at, r.started_at),
        output_path = coalesce(r.output_path, a.output_path),
        detail = left(r.detail, 2000),
        ended_at = least(greatest(coalesce(r.finished_at, now()), a.picked_at), now())
    FROM r, attempts old
    WHERE a.task_id = r.task_id AND a.attempt = r.attempt AND a.ended_at IS NULL
      AND (r.worker_id IS NULL OR a.worker_id = r.worker_id)
      AND old.task_id = a.task_id AND old.attempt = a.attempt
    RETURNING a.task_id, a.attempt, a.worker_id, a.started_at, a.ended_at, a.output_path,
              r.status, r.reason, r.exit_code,
              old.started_at IS NULL AND a.started_at IS NOT NULL AS start_unrecorded,
              coalesce(r.reason IN {USES_RETRY}, false) AS uses_retry,
              coalesce(r.reason IN {LOST_REASONS}, false) AS lost
), freed AS (
    UPDATE worker_endings w SET ended_total = w.ended_total + f.n
    FROM (SELECT worker_id, count(*) AS n FROM ended GROUP BY worker_id) f
    WHERE w.worker_id = f.worker_id
), released AS (
    UPDATE concurrency_keys k SET running = greatest(k.running - f.n, 0)
    FROM (SELECT t.concurrency_key AS key, count(*) AS n
          FROM ended e JOIN tasks t ON t.id = e.task_id
          WHERE t.concurrency_key IS NOT NULL GROUP BY t.concurrency_key) f
    WHERE k.key = f.key
), released_queues AS (
    UPDATE queues q SET running = greatest(q.running - f.n, 0)
    FROM (SELECT t.queue, count(*) AS n
          FROM ended e JOIN tasks t ON t.id = e.task_id GROUP BY t.queue) f
    WHERE q.name = f.queue AND q.max_running IS NOT NULL
), decision AS (
    SELECT d.*,
           CASE WHEN d.status = 'succeeded' THEN 'succeeded'
                WHEN d.status = 'cancelled' THEN 'cancelled'
                WHEN NOT d.uses_retry OR d.lost_paid OR d.failures < d.max_retries THEN 'queued'
                ELSE 'failed' END AS next_status,
           CASE WHEN d.lost_paid
                THEN least(%(backoff_cap)s,
                           d.retry_backoff_seconds * power(2, d.losses) * (1 + random() * 0.2))
                WHEN d.uses_retry
                THEN least(%(backoff_cap)s,
                           d.retry_backoff_seconds * power(2, d.failures) * (1 + random() * 0.2))
                ELSE %(requeue_after)s END AS delay
    FROM (
        SELECT t.id, e.attempt, e.started_at, e.ended_at, e.output_path, e.status, e.reason,
               e.exit_code, e.uses_retry, t.failures, t.max_retries, t.losses,
               t.retry_backoff_seconds,
               e.lost AND e.status = 'failed' AND t.losses < t.lost_retries AS lost_paid
        FROM tasks t JOIN ended e ON e.task_id = t.id AND e.attempt = t.attempt
        WHERE t.status IN ('dispatched', 'running')
    ) d
), moved AS (
    UPDATE tasks t
    SET status = d.next_status,
        failures = t.failures
                   + CASE WHEN d.uses_retry AND d.status = 'failed' AND NOT d.lost_paid
                          THEN 1 ELSE 0 END,
        losses = t.losses + CASE WHEN d.lost_paid THEN 1 ELSE 0 END,
        run_at = CASE WHEN d.next_status = 'queued'
                      THEN greatest(t.run_at, now() + make_interval(secs => d.delay))
                      ELSE t.run_at END,
        worker_id = CASE WHEN d.next_status = 'queued' THEN NULL ELSE t.worker_id END,
        picked_at = CASE WHEN d.next_status = 'queued' THEN NULL ELSE t.picked_at END,
        started_at = CASE WHEN d.next_status = 'queued' THEN NULL ELSE d.started_at END,
        output_path = CASE WHEN d.next_status = 'queued' THEN NULL ELSE d.output_path END,
        exit_code = CASE WHEN d.next_status = 'queued' THEN NULL ELSE d.exit_code END,
        completed_at = CASE WHEN d.next_status IN ('succeeded', 'failed', 'cancelled')
                            THEN d.ended_at END,
        failed_at = CASE WHEN d.next_status = 'failed' THEN d.ended_at END,
        cancelled_at = CASE WHEN d.next_status = 'cancelled' THEN d.ended_at END,
        last_reason = d.reason
    FROM decision d
    WHERE t.id = d.id AND t.attempt = d.attempt AND t.status IN ('dispatched', 'running')
    RETURNING t.id, t.status
)
SELECT e.task_id, e.attempt, e.worker_id, k.schedule_id, e.status, e.reason, e.exit_code,
       e.started_at, e.ended_at, m.status AS task_status, k.run_at, e.start_unrecorded
FROM ended e JOIN tasks k ON k.id = e.task_id LEFT JOIN moved m ON m.id = e.task_id
"""
# End attempts (see END_ATTEMPT_CTES).
END_ATTEMPTS = f"WITH {END_ATTEMPT_CTES}"

# END_ATTEMPTS, and first the merge of output deltas (outputs.MERGE_OUTPUT_CTES) in the same
# statement: both read the attempts as they were before it, so an attempt's last output is
# merged while the attempt is still open, as when the merge runs first on its own.
END_ATTEMPTS_AND_OUTPUTS = f"WITH {outputs.MERGE_OUTPUT_CTES},\n{END_ATTEMPT_CTES}"


# The fields of an AttemptEnd that END_ATTEMPT_CTES reads (r), as they are named there.
END_FIELDS = (
    "task_id", "attempt", "worker_id", "status", "reason", "exit_code", "started_at",
    "finished_at", "output_path", "detail",
)


async def end_attempts(
    conn: Conn, ends: Sequence[AttemptEnd], deltas: Sequence[OutputDelta] = ()
) -> dict[AttemptKey, EndedAttempt]:
    """End open attempts (distinct keys), after merging output deltas (at most one per attempt)
    in the same statement. Returns each attempt that was open, how it ended and its task's new
    status (None when the task did not move)."""
    if not ends:
        await outputs.merge_outputs(conn, deltas)
        return {}
    cur = conn.cursor(row_factory=class_row(EndedAttempt))
    await cur.execute(
        END_ATTEMPTS_AND_OUTPUTS if deltas else END_ATTEMPTS,
        {
            **(outputs.output_params(deltas) if deltas else {}),
            "ends": json_records(ends, *END_FIELDS),
            "backoff_cap": RETRY_BACKOFF_CAP_SECONDS,
            "requeue_after": REQUEUE_AFTER_REFUSAL_SECONDS,
        },
    )
    return {AttemptKey(row.task_id, row.attempt): row for row in await cur.fetchall()}


# --- stops ------------------------------------------------------------------------------------

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


async def take_pending_stops(
    conn: Conn, resend_after_seconds: float, limit: int
) -> list[StopRequest]:
    params = {"resend_after": resend_after_seconds, "limit": limit}
    return await fetch_all(conn, StopRequest, TAKE_PENDING_STOPS, params)
