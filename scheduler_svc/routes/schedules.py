"""The schedule API: cron schedules, their previews and their tick ledger.

The scheduler only writes schedules; coordinators fire them (coordinator_svc/cron.py). Times
that decide anything come from the database clock, read inside the writing transaction.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from common.cronspec import CronError, CronSpec, fire_times, load_zone, next_fire, parse
from scheduler_svc import telemetry
from scheduler_svc.api_models import parse_rfc3339, rfc3339, task_status_view
from scheduler_svc.deps import Pool, parse_uuid
from scheduler_svc.schedule_models import (
    MAX_CRON_CHARS,
    ExpressionPreview,
    NameQuery,
    ScheduleCreate,
    ScheduleList,
    SchedulePatch,
    SchedulePreview,
    ScheduleView,
    TickList,
    TriggeredRun,
    fire_time_view,
    schedule_view,
    tick_view,
)
from store import schedules, tasks
from store.db import in_transaction
from store.models import ScheduleRow, ScheduleSettings, TaskRow
from store.ticks import decide_tick
from store.vocabulary import TickOutcome
from store.wakeups import Topic, notify_wakeup

router = APIRouter()

UPCOMING = 5
MAX_PREVIEW = 1000
MAX_PAGE = 500
Conn = psycopg.AsyncConnection[Any]


def parse_schedule_id(raw: str) -> uuid.UUID:
    return parse_uuid(raw, "schedule id")


def cron_spec(cron: str, timezone: str, where: str = "body") -> CronSpec:
    """The validated expression, or a 422 naming what is wrong with it (the zone or the
    expression, found in the request's `where`)."""
    try:
        load_zone(timezone)
    except CronError as exc:
        detail = [{"loc": [where, "timezone"], "msg": str(exc), "type": "value_error"}]
        raise HTTPException(422, detail) from None
    try:
        return parse(cron, timezone)
    except CronError as exc:
        detail = [{"loc": [where, "cron"], "msg": str(exc), "type": "value_error"}]
        raise HTTPException(422, detail) from None


def upcoming(row: ScheduleRow, after: datetime, count: int) -> list[datetime]:
    """The schedule's next `count` fire times after `after` (none if they cannot be computed)."""
    try:
        return fire_times(parse(row.cron, row.timezone), after, row.anchor_at, count)
    except CronError:
        return []


def not_found(schedule_id: uuid.UUID) -> HTTPException:
    return HTTPException(404, f"no schedule with id {schedule_id}")


async def view_now(conn: Conn, row: ScheduleRow) -> dict[str, Any]:
    return schedule_view(row, upcoming(row, await schedules.database_now(conn), UPCOMING))


@router.post("/schedules", status_code=201, response_model=ScheduleView)
async def create_schedule(body: ScheduleCreate, pool: Pool) -> JSONResponse:
    """Create a schedule. It fires only for ticks after this moment."""
    spec = cron_spec(body.cron, body.timezone)
    settings = ScheduleSettings(**(body.model_dump() | {"cron": spec.expression}))

    async def create(conn: Conn) -> dict[str, Any] | None:
        at = await schedules.database_now(conn)
        fires = fire_times(spec, at, at, UPCOMING)
        row = await schedules.insert_schedule(conn, uuid.uuid4(), settings, at, fires[0])
        if row is None:
            return None
        await notify_wakeup(conn, Topic.SCHEDULES)
        return schedule_view(row, fires)

    view = await in_transaction(pool, create)
    if view is None:
        raise HTTPException(409, f"a schedule named {body.name!r} already exists")
    return JSONResponse(view, status_code=201)


@router.get("/schedules", response_model=ScheduleList)
async def list_schedules(
    pool: Pool,
    name_prefix: Annotated[NameQuery, Query(max_length=200)] = "",
    paused: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[NameQuery | None, Query(min_length=1, max_length=200)] = None,
) -> dict[str, Any]:
    """Schedules in name order; pass next_cursor back as cursor for the next page."""
    async with pool.connection() as conn:
        rows = await schedules.list_schedules(conn, name_prefix, paused, cursor, limit)
        now = await schedules.database_now(conn)
    return {
        "schedules": [schedule_view(r, upcoming(r, now, UPCOMING)) for r in rows],
        "next_cursor": rows[-1].name if len(rows) == limit else None,
    }


@router.get("/schedules/preview", response_model=ExpressionPreview)
async def preview_expression(
    cron: Annotated[str, Query(min_length=1, max_length=MAX_CRON_CHARS)],
    timezone: Annotated[str, Query(min_length=1, max_length=64)] = "UTC",
    count: Annotated[int, Query(ge=1, le=MAX_PREVIEW)] = 10,
) -> dict[str, Any]:
    """The next `count` fire times of an expression before it is saved: what a form shows as
    the expression is typed, with the same 422 a create would answer. Counted from now, as a
    schedule created now would be."""
    now = datetime.now(UTC)
    spec = cron_spec(cron, timezone, where="query")
    fires = [fire_time_view(f, timezone) for f in fire_times(spec, now, now, count)]
    return {"cron": cron, "timezone": timezone, "fire_times": fires}


@router.get("/schedules/{schedule_id}", response_model=ScheduleView)
async def get_schedule(pool: Pool, schedule_id: str) -> dict[str, Any]:
    """One schedule with its next fire times."""
    sid = parse_schedule_id(schedule_id)
    async with pool.connection() as conn:
        row = await schedules.get_schedule(conn, sid)
        if row is None:
            raise not_found(sid)
        return await view_now(conn, row)


@router.patch("/schedules/{schedule_id}", response_model=ScheduleView)
async def patch_schedule(pool: Pool, schedule_id: str, body: SchedulePatch) -> dict[str, Any]:
    """Change some settings. A new expression or zone fires only for ticks after this moment;
    a new expression also re-anchors @every."""
    sid = parse_schedule_id(schedule_id)
    if nulls := body.null_fields():
        raise HTTPException(422, f"these fields cannot be null: {', '.join(nulls)}")

    async def patch(conn: Conn) -> dict[str, Any]:
        current = await schedules.lock_schedule(conn, sid)
        if current is None:
            raise not_found(sid)
        fields = [f.name for f in dataclasses.fields(ScheduleSettings)]
        merged = {name: getattr(current, name) for name in fields}
        merged |= body.model_dump(include=body.model_fields_set)
        if (merged["concurrency_key"] is None) != (merged["concurrency_limit"] is None):
            raise HTTPException(422, "give concurrency_key and concurrency_limit together")
        spec = cron_spec(merged["cron"], merged["timezone"])
        settings = ScheduleSettings(**(merged | {"cron": spec.expression}))
        at = await schedules.database_now(conn)
        anchor_at = at if settings.cron != current.cron else current.anchor_at
        next_fire_at = current.next_fire_at
        if settings.cron != current.cron or settings.timezone != current.timezone:
            next_fire_at = next_fire(spec, at, anchor_at)
        row = await schedules.update_schedule(conn, sid, settings, at, anchor_at, next_fire_at)
        assert row is not None  # locked above
        await notify_wakeup(conn, Topic.SCHEDULES)
        return schedule_view(row, fire_times(spec, at, anchor_at, UPCOMING))

    try:
        return await in_transaction(pool, patch)
    except psycopg.errors.UniqueViolation:
        raise HTTPException(409, f"a schedule named {body.name!r} already exists") from None


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(pool: Pool, schedule_id: str) -> Response:
    """Stop the schedule for good. Runs already started keep running."""
    sid = parse_schedule_id(schedule_id)
    deleted = await in_transaction(pool, lambda conn: schedules.delete_schedule(conn, sid))
    if not deleted:
        raise not_found(sid)
    return Response(status_code=204)


async def set_paused(pool: AsyncConnectionPool, schedule_id: str, paused: bool) -> dict[str, Any]:
    sid = parse_schedule_id(schedule_id)

    async def change(conn: Conn) -> dict[str, Any]:
        row = await schedules.set_schedule_paused(conn, sid, paused)
        if row is None:
            raise not_found(sid)
        await notify_wakeup(conn, Topic.SCHEDULES)
        return await view_now(conn, row)

    return await in_transaction(pool, change)


@router.post("/schedules/{schedule_id}/pause", response_model=ScheduleView)
async def pause_schedule(pool: Pool, schedule_id: str) -> dict[str, Any]:
    """Stop running ticks; each one is still recorded, as skipped_paused."""
    return await set_paused(pool, schedule_id, True)


@router.post("/schedules/{schedule_id}/resume", response_model=ScheduleView)
async def resume_schedule(pool: Pool, schedule_id: str) -> dict[str, Any]:
    """Run ticks again, from this moment on (ticks during the pause never run)."""
    return await set_paused(pool, schedule_id, False)


@router.post("/schedules/{schedule_id}/trigger", status_code=201, response_model=TriggeredRun)
async def trigger_schedule(pool: Pool, schedule_id: str) -> JSONResponse:
    """Start one run now, outside the cron and even when paused, under the overlap policy."""
    sid = parse_schedule_id(schedule_id)

    async def trigger(conn: Conn) -> tuple[TaskRow, tuple[uuid.UUID, ...]]:
        schedule = await schedules.lock_schedule(conn, sid)
        if schedule is None:
            raise not_found(sid)
        unfinished = [run.task_id for run in await schedules.lock_unfinished_runs(conn, [sid])]
        decision = decide_tick(schedule, unfinished, None)
        if decision.outcome == TickOutcome.SKIPPED_OVERLAP:
            raise HTTPException(
                409,
                f"run {unfinished[0]} of this schedule has not finished and its "
                "overlap policy is 'skip'",
            )
        await tasks.cancel_tasks(conn, decision.cancel)  # all of them: they are locked
        task = await schedules.insert_triggered_run(conn, sid)
        assert task is not None  # the schedule is locked
        topics = [Topic.TASKS] + ([Topic.STOPS] if decision.cancel else [])
        await notify_wakeup(conn, *topics)
        return task, decision.cancel

    task, cancelled = await in_transaction(pool, trigger)
    telemetry.accepted(task)
    cancelled_ids = [str(run_id) for run_id in cancelled]
    return JSONResponse(
        {"task": task_status_view(task), "cancelled_task_ids": cancelled_ids}, status_code=201
    )


@router.get("/schedules/{schedule_id}/preview", response_model=SchedulePreview)
async def preview_schedule(
    pool: Pool,
    schedule_id: str,
    count: Annotated[int, Query(ge=1, le=MAX_PREVIEW)] = 10,
) -> dict[str, Any]:
    """The next `count` fire times, in UTC and in the schedule's zone."""
    sid = parse_schedule_id(schedule_id)
    async with pool.connection() as conn:
        row = await schedules.get_schedule(conn, sid)
        if row is None:
            raise not_found(sid)
        now = await schedules.database_now(conn)
    fires = [fire_time_view(f, row.timezone) for f in upcoming(row, now, count)]
    return {"id": str(sid), "timezone": row.timezone, "fire_times": fires}


@router.get("/schedules/{schedule_id}/ticks", response_model=TickList)
async def list_ticks(
    pool: Pool,
    schedule_id: str,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> dict[str, Any]:
    """The tick ledger, newest first; pass next_cursor back as cursor for older ticks."""
    sid = parse_schedule_id(schedule_id)
    try:
        before = parse_rfc3339(cursor) if cursor is not None else None
    except ValueError as exc:
        raise HTTPException(422, f"cursor {exc}") from None
    async with pool.connection() as conn:
        row = await schedules.get_schedule(conn, sid)
        if row is None:
            raise not_found(sid)
        ticks = await schedules.list_ticks(conn, sid, before, limit)
    return {
        "ticks": [tick_view(t, row.timezone) for t in ticks],
        "next_cursor": rfc3339(ticks[-1].fire_time) if len(ticks) == limit else None,
    }
