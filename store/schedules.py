"""Cron schedules and their tick ledger: what users set, and what the cron loop claims and
records.

Functions take a connection; the caller owns the transaction. Times that decide anything come
from the database clock, or from a `now` passed in where tests control time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from store.db import Conn, fetch_all, fetch_one, fetch_value, unnest_arrays
from store.models import DueSchedule, ScheduleRow, ScheduleRun, ScheduleSettings, TaskRow, TickRow
from store.ticks import DecidedTick
from store.vocabulary import UNFINISHED_RUN_STATUSES, sql_list

# The database clock at this statement: schedules are anchored and previewed by it.
DATABASE_NOW = "SELECT statement_timestamp()"


async def database_now(conn: Conn) -> datetime:
    now: datetime = await fetch_value(conn, DATABASE_NOW)
    return now


def settings_params(settings: ScheduleSettings) -> dict[str, Any]:
    """A schedule's settings as statement parameters (labels and env as JSON text)."""
    return asdict(settings) | {
        "labels": json.dumps(settings.labels),
        "env": json.dumps(settings.env),
    }


# Create a schedule; with its name taken by a live schedule, insert nothing.
INSERT_SCHEDULE = """
INSERT INTO schedules (id, name, cron, timezone, command, overlap, catchup_window_seconds,
                       timeout_seconds, max_retries, retry_backoff_seconds, paused,
                       jitter_seconds, created_at, updated_at, anchor_at, active_from,
                       next_fire_at, priority, queue, labels, env, cwd, success_exit_codes,
                       output_cap_bytes, lost_retries, memory_limit_bytes, cpu_limit_seconds,
                       open_files_limit, concurrency_key, concurrency_limit)
VALUES (%(id)s, %(name)s, %(cron)s, %(timezone)s, %(command)s, %(overlap)s,
        %(catchup_window_seconds)s, %(timeout_seconds)s, %(max_retries)s,
        %(retry_backoff_seconds)s, %(paused)s, %(jitter_seconds)s,
        %(at)s, %(at)s, %(at)s, %(at)s, %(next_fire_at)s, %(priority)s, %(queue)s,
        %(labels)s::jsonb, %(env)s::jsonb, %(cwd)s, %(success_exit_codes)s::smallint[],
        %(output_cap_bytes)s, %(lost_retries)s, %(memory_limit_bytes)s, %(cpu_limit_seconds)s,
        %(open_files_limit)s, %(concurrency_key)s, %(concurrency_limit)s)
ON CONFLICT (name) WHERE deleted_at IS NULL DO NOTHING
RETURNING *
"""


async def insert_schedule(
    conn: Conn, schedule_id: UUID, settings: ScheduleSettings, at: datetime, next_fire_at: datetime
) -> ScheduleRow | None:
    """Create a schedule anchored at `at`; None when a live schedule has the name."""
    params = {**settings_params(settings), "id": schedule_id, "at": at}
    params["next_fire_at"] = next_fire_at
    return await fetch_one(conn, ScheduleRow, INSERT_SCHEDULE, params)


# One live schedule by id.
SELECT_SCHEDULE = "SELECT * FROM schedules WHERE id = %(id)s AND deleted_at IS NULL"


async def get_schedule(conn: Conn, schedule_id: UUID) -> ScheduleRow | None:
    return await fetch_one(conn, ScheduleRow, SELECT_SCHEDULE, {"id": schedule_id})


# Lock a live schedule before changing it or starting a run of it.
LOCK_SCHEDULE = "SELECT * FROM schedules WHERE id = %(id)s AND deleted_at IS NULL FOR UPDATE"


async def lock_schedule(conn: Conn, schedule_id: UUID) -> ScheduleRow | None:
    return await fetch_one(conn, ScheduleRow, LOCK_SCHEDULE, {"id": schedule_id})


# Live schedules in name order, after a cursor, optionally by name prefix and paused state.
LIST_SCHEDULES = """
SELECT * FROM schedules
WHERE deleted_at IS NULL AND starts_with(name, %(prefix)s)
  AND (%(paused)s::boolean IS NULL OR paused = %(paused)s::boolean)
  AND (%(after)s::text IS NULL OR name > %(after)s::text)
ORDER BY name
LIMIT %(limit)s
"""


async def list_schedules(
    conn: Conn, prefix: str, paused: bool | None, after: str | None, limit: int
) -> list[ScheduleRow]:
    params = {"prefix": prefix, "paused": paused, "after": after, "limit": limit}
    return await fetch_all(conn, ScheduleRow, LIST_SCHEDULES, params)


# Replace a schedule's settings. Resuming (paused -> not paused) moves active_from to now, so
# ticks from the pause never run.
UPDATE_SCHEDULE = """
UPDATE schedules
SET name = %(name)s, cron = %(cron)s, timezone = %(timezone)s, command = %(command)s,
    overlap = %(overlap)s, catchup_window_seconds = %(catchup_window_seconds)s,
    timeout_seconds = %(timeout_seconds)s, max_retries = %(max_retries)s,
    retry_backoff_seconds = %(retry_backoff_seconds)s, jitter_seconds = %(jitter_seconds)s,
    priority = %(priority)s, queue = %(queue)s, labels = %(labels)s::jsonb,
    env = %(env)s::jsonb, cwd = %(cwd)s, success_exit_codes = %(success_exit_codes)s::smallint[],
    output_cap_bytes = %(output_cap_bytes)s, lost_retries = %(lost_retries)s,
    memory_limit_bytes = %(memory_limit_bytes)s, cpu_limit_seconds = %(cpu_limit_seconds)s,
    open_files_limit = %(open_files_limit)s,
    concurrency_key = %(concurrency_key)s, concurrency_limit = %(concurrency_limit)s,
    active_from = CASE WHEN paused AND NOT %(paused)s THEN greatest(active_from, %(at)s)
                       ELSE active_from END,
    paused = %(paused)s, anchor_at = %(anchor_at)s, next_fire_at = %(next_fire_at)s,
    updated_at = greatest(updated_at, %(at)s)
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING *
"""


async def update_schedule(
    conn: Conn,
    schedule_id: UUID,
    settings: ScheduleSettings,
    at: datetime,
    anchor_at: datetime,
    next_fire_at: datetime,
) -> ScheduleRow | None:
    """Replace the settings of a live schedule (raises UniqueViolation for a taken name)."""
    params = {**settings_params(settings), "id": schedule_id, "at": at, "anchor_at": anchor_at}
    params["next_fire_at"] = next_fire_at
    return await fetch_one(conn, ScheduleRow, UPDATE_SCHEDULE, params)


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


async def set_schedule_paused(
    conn: Conn, schedule_id: UUID, paused: bool, at: datetime | None = None
) -> ScheduleRow | None:
    return await fetch_one(
        conn, ScheduleRow, SET_SCHEDULE_PAUSED, {"id": schedule_id, "paused": paused, "at": at}
    )


# Delete a schedule: it never fires again; its ledger and runs stay, its name is free.
DELETE_SCHEDULE = """
UPDATE schedules SET deleted_at = now(), updated_at = greatest(updated_at, now())
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id
"""


async def delete_schedule(conn: Conn, schedule_id: UUID) -> bool:
    cur = await conn.execute(DELETE_SCHEDULE, {"id": schedule_id})
    return await cur.fetchone() is not None


# A schedule's ticks, newest first, before a cursor, with the current status of their runs.
LIST_TICKS = """
SELECT k.schedule_id, k.fire_time, k.outcome, k.task_id, k.recorded_at, t.status AS task_status
FROM schedule_ticks k LEFT JOIN tasks t ON t.id = k.task_id
WHERE k.schedule_id = %(id)s
  AND (%(before)s::timestamptz IS NULL OR k.fire_time < %(before)s::timestamptz)
ORDER BY k.fire_time DESC
LIMIT %(limit)s
"""


async def list_ticks(
    conn: Conn, schedule_id: UUID, before: datetime | None, limit: int
) -> list[TickRow]:
    return await fetch_all(
        conn, TickRow, LIST_TICKS, {"id": schedule_id, "before": before, "limit": limit}
    )


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


async def claim_due_schedules(conn: Conn, now: datetime | None, limit: int) -> list[DueSchedule]:
    return await fetch_all(conn, DueSchedule, CLAIM_DUE_SCHEDULES, {"now": now, "limit": limit})


# Move claimed schedules to their next fire time.
ADVANCE_SCHEDULES = """
UPDATE schedules s SET next_fire_at = n.next_fire_at
FROM unnest(%(ids)s::uuid[], %(next_fire_at)s::timestamptz[]) AS n (id, next_fire_at)
WHERE s.id = n.id
"""


async def advance_schedules(conn: Conn, next_fire_at: dict[UUID, datetime]) -> None:
    await conn.execute(
        ADVANCE_SCHEDULES,
        {"ids": list(next_fire_at), "next_fire_at": list(next_fire_at.values())},
    )


# Seconds until the earliest live schedule is due (<= 0: due now); NULL when there is none.
SECONDS_UNTIL_NEXT_FIRE = """
SELECT extract(epoch FROM min(next_fire_at) - clock_timestamp())::float8
FROM schedules WHERE deleted_at IS NULL
"""


async def seconds_until_next_fire(conn: Conn) -> float | None:
    seconds = await fetch_value(conn, SECONDS_UNTIL_NEXT_FIRE)
    return None if seconds is None else float(seconds)


# The unfinished runs of some schedules, which their overlap policies look at, locked so they
# cannot finish while a tick or a trigger is decided and carried out.
LOCK_UNFINISHED_RUNS = f"""
SELECT schedule_id, id AS task_id FROM tasks
WHERE schedule_id = ANY(%(ids)s::uuid[]) AND status IN {sql_list(UNFINISHED_RUN_STATUSES)}
ORDER BY created_at
FOR UPDATE
"""


async def lock_unfinished_runs(conn: Conn, schedule_ids: Sequence[UUID]) -> list[ScheduleRun]:
    return await fetch_all(conn, ScheduleRun, LOCK_UNFINISHED_RUNS, {"ids": list(schedule_ids)})


# Record decided ticks of claimed schedules and create their runs, in one statement (the
# outcomes were decided by store.ticks; nothing is decided here). A tick already in the ledger
# changes nothing and creates nothing. Each run is claimable from its fire time plus up to
# jitter_seconds, never earlier; a run that a later tick of the same pass cancelled is created
# cancelled, as if it had been cancelled right after it was created.
RECORD_TICKS = """
WITH decided AS (
    SELECT * FROM unnest(%(schedule_ids)s::uuid[], %(fire_times)s::timestamptz[],
                         %(outcomes)s::text[], %(run_ids)s::uuid[], %(runs_cancelled)s::bool[])
        AS d (schedule_id, fire_time, outcome, run_id, run_cancelled)
), ticked AS (
    INSERT INTO schedule_ticks (schedule_id, fire_time, outcome, task_id, recorded_at)
    SELECT schedule_id, fire_time, outcome, run_id, %(now)s::timestamptz FROM decided
    ON CONFLICT (schedule_id, fire_time) DO NOTHING
    RETURNING schedule_id, fire_time, outcome, task_id
), started AS (
    INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                       timeout_seconds, schedule_id, fire_time, exclusive_run, status,
                       cancelled_at, completed_at, last_reason, priority, queue, labels, env,
                       cwd, success_exit_codes, output_cap_bytes, lost_retries,
                       memory_limit_bytes, cpu_limit_seconds, open_files_limit,
                       concurrency_key, concurrency_limit)
    SELECT k.task_id, s.command, k.fire_time,
           k.fire_time + make_interval(secs => random() * s.jitter_seconds),
           s.max_retries, s.retry_backoff_seconds, s.timeout_seconds, s.id, k.fire_time,
           s.overlap <> 'allow',
           CASE WHEN d.run_cancelled THEN 'cancelled' ELSE 'queued' END,
           CASE WHEN d.run_cancelled THEN now() END, CASE WHEN d.run_cancelled THEN now() END,
           CASE WHEN d.run_cancelled THEN 'cancelled' END, s.priority, s.queue, s.labels,
           s.env, s.cwd, s.success_exit_codes, s.output_cap_bytes, s.lost_retries,
           s.memory_limit_bytes, s.cpu_limit_seconds, s.open_files_limit,
           s.concurrency_key, s.concurrency_limit
    FROM ticked k
    JOIN decided d USING (schedule_id, fire_time)
    JOIN schedules s ON s.id = k.schedule_id
    WHERE k.task_id IS NOT NULL
)
SELECT outcome, count(*)::int FROM ticked GROUP BY outcome
"""


async def record_ticks(
    conn: Conn, decided: Sequence[tuple[UUID, DecidedTick]], now: datetime
) -> dict[str, int]:
    """Record (schedule_id, decided tick) pairs; returns how many got each outcome."""
    cur = await conn.execute(
        RECORD_TICKS,
        {
            "schedule_ids": [schedule_id for schedule_id, _ in decided],
            **unnest_arrays(
                [tick for _, tick in decided],
                fire_times="fire_time",
                outcomes="outcome",
                run_ids="run_id",
                runs_cancelled="run_cancelled",
            ),
            "now": now,
        },
    )
    return {str(outcome): int(n) for outcome, n in await cur.fetchall()}


# A run of a schedule outside its cron (POST /schedules/{id}/trigger): due now, no tick.
INSERT_TRIGGERED_RUN = """
INSERT INTO tasks (id, command, scheduled_at, run_at, max_retries, retry_backoff_seconds,
                   timeout_seconds, schedule_id, exclusive_run, priority, queue, labels, env,
                   cwd, success_exit_codes, output_cap_bytes, lost_retries, memory_limit_bytes,
                   cpu_limit_seconds, open_files_limit, concurrency_key, concurrency_limit)
SELECT %(task_id)s, command, now(), now(), max_retries, retry_backoff_seconds, timeout_seconds,
       id, overlap <> 'allow', priority, queue, labels, env, cwd, success_exit_codes,
       output_cap_bytes, lost_retries, memory_limit_bytes, cpu_limit_seconds, open_files_limit,
       concurrency_key, concurrency_limit
FROM schedules WHERE id = %(id)s
RETURNING *
"""


async def insert_triggered_run(conn: Conn, schedule_id: UUID) -> TaskRow | None:
    params = {"id": schedule_id, "task_id": uuid4()}
    return await fetch_one(conn, TaskRow, INSERT_TRIGGERED_RUN, params)
