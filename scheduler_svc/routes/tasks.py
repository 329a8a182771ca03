"""One-off tasks: submit, read, list, cancel and retry."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from scheduler_svc import telemetry
from scheduler_svc.api_models import ScheduleRequest, task_detail_view, task_status_view
from scheduler_svc.deps import Inserter, Pool, parse_uuid
from store import tasks
from store.db import in_transaction
from store.models import NewTask, TaskRow
from store.vocabulary import TaskStatus
from store.wakeups import Topic, notify_wakeup

MAX_PAGE = 500
IDEMPOTENCY_KEY_MAX = 255

router = APIRouter()


def parse_task_id(raw: str) -> uuid.UUID:
    return parse_uuid(raw, "task_id")


def request_fingerprint(body: ScheduleRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or not key.isprintable() or not key.isascii():
        raise HTTPException(422, "Idempotency-Key must be 1-255 printable ASCII characters")
    return key


@router.post(
    "/schedule",
    status_code=201,
    responses={200: {"description": "The task an earlier request with this Idempotency-Key made"}},
)
async def schedule_task(
    body: ScheduleRequest,
    pool: Pool,
    inserter: Inserter,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Queue a command to run once, now, after a delay, or at a given instant."""
    key = check_idempotency_key(idempotency_key)
    fingerprint = request_fingerprint(body) if key else None
    new = NewTask(
        command=body.command,
        scheduled_at=body.scheduled_at,
        delay_seconds=body.delay_seconds,
        max_retries=body.max_retries,
        retry_backoff_seconds=body.retry_backoff_seconds,
        timeout_seconds=body.timeout_seconds,
        idempotency_key=key,
        request_hash=fingerprint,
    )

    if key is None:
        created_task = await inserter.insert(new)
        telemetry.accepted(created_task)
        return JSONResponse(task_status_view(created_task), status_code=201)

    async def insert(conn: psycopg.AsyncConnection[Any]) -> tuple[TaskRow | None, bool]:
        created = await tasks.insert_task(conn, uuid.uuid4(), new)
        if created is not None:
            await notify_wakeup(conn, Topic.TASKS)
            return created, True
        return await tasks.get_task_by_idempotency_key(conn, key), False

    task, created = await in_transaction(pool, insert)
    if task is None:  # the key's task was deleted between the two statements
        raise HTTPException(409, "Idempotency-Key conflict, retry the request")
    if not created and task.request_hash != fingerprint:
        raise HTTPException(409, "Idempotency-Key was already used with a different request body")
    if created:
        telemetry.accepted(task)
    return JSONResponse(task_status_view(task), status_code=201 if created else 200)


async def load_task(pool: AsyncConnectionPool, task_id: uuid.UUID) -> TaskRow:
    async with pool.connection() as conn:
        task = await tasks.get_task(conn, task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id}")
    return task


async def load_detail(pool: AsyncConnectionPool, task_id: uuid.UUID) -> dict[str, Any]:
    """The task with its attempts, or a 404."""
    async with pool.connection() as conn:
        task = await tasks.get_task(conn, task_id)
        attempts = await tasks.list_attempts(conn, task_id) if task else []
    if task is None:
        raise HTTPException(404, f"no task with id {task_id}")
    return task_detail_view(task, attempts)


@router.get("/status")
async def task_status(pool: Pool, task_id: Annotated[str, Query()]) -> dict[str, Any]:
    """The current state of one task."""
    return task_status_view(await load_task(pool, parse_task_id(task_id)))


@router.get("/tasks")
async def list_tasks(
    pool: Pool,
    task_ids: Annotated[list[str] | None, Query(alias="id", max_length=MAX_PAGE)] = None,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Tasks named by `id` (repeat it, up to 500), or a page of tasks newest first, optionally
    of one status; pass next_cursor back as `before` for the next page."""
    cursor = parse_uuid(before, "before") if before is not None else None
    if task_ids and (status is not None or cursor is not None):
        raise HTTPException(422, "`id` names tasks exactly: it takes no `status` or `before`")
    async with pool.connection() as conn:
        if task_ids:
            ids = [parse_task_id(raw) for raw in task_ids]
            return {"tasks": [task_status_view(t) for t in await tasks.get_tasks(conn, ids)]}
        page = await tasks.list_tasks(conn, status, cursor, limit)
    return {
        "tasks": [task_status_view(t) for t in page],
        "next_cursor": str(page[-1].id) if len(page) == limit else None,
    }


@router.get("/tasks/{task_id}")
async def task_detail(pool: Pool, task_id: str) -> dict[str, Any]:
    """One task with every attempt made to run it."""
    return await load_detail(pool, parse_task_id(task_id))


@router.post("/tasks/{task_id}/cancel")
async def cancel_task(pool: Pool, task_id: str) -> dict[str, Any]:
    """Cancel a task: at once when queued; a running attempt is stopped on its worker."""
    tid = parse_task_id(task_id)

    async def cancel(conn: psycopg.AsyncConnection[Any]) -> TaskRow | None:
        current = await tasks.lock_task(conn, tid)
        if current is None or TaskStatus(current.status).finished:
            return current
        (cancelled,) = await tasks.cancel_tasks(conn, [tid])  # locked, and not finished
        await notify_wakeup(conn, Topic.STOPS)
        return cancelled

    task = await in_transaction(pool, cancel)
    if task is None:
        raise HTTPException(404, f"no task with id {tid}")
    if task.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        raise HTTPException(409, f"task {tid} already finished as {task.status}")
    return await load_detail(pool, tid)


@router.post("/tasks/{task_id}/retry")
async def retry_task(pool: Pool, task_id: str) -> dict[str, Any]:
    """Queue a failed task again, with its retries restored."""
    tid = parse_task_id(task_id)

    async def requeue(conn: psycopg.AsyncConnection[Any]) -> TaskRow | None:
        task = await tasks.requeue_failed_task(conn, tid)
        if task is not None:
            await notify_wakeup(conn, Topic.TASKS)
        return task

    try:
        task = await in_transaction(pool, requeue)
    except psycopg.errors.UniqueViolation:
        # tasks_one_exclusive_run: another run of its schedule (overlap skip) is unfinished
        raise HTTPException(409, "another run of this task's schedule has not finished") from None
    if task is None:
        existing = await load_task(pool, tid)
        raise HTTPException(409, f"only failed tasks can be retried; task is {existing.status}")
    return await load_detail(pool, tid)
