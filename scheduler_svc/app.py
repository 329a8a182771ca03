"""The FastAPI application: routes for tasks, health, and (mounted) schedules."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler_svc.api_models import ScheduleRequest, task_detail_view, task_status_view
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.dashboard import router as dashboard_router
from scheduler_svc.deps import inserter_of, parse_uuid, pool_of
from scheduler_svc.inserts import TaskInserter
from scheduler_svc.schedules import router as schedules_router
from store import migrate, tasks
from store.db import in_transaction, make_pool
from store.models import NewTask, TaskRow
from store.vocabulary import TaskStatus
from store.wakeups import Topic, notify_wakeup

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
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


@router.post("/schedule", status_code=201)
async def schedule_task(
    body: ScheduleRequest,
    request: Request,
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
        created_task = await inserter_of(request).insert(new)
        return JSONResponse(task_status_view(created_task), status_code=201)

    async def insert(conn: psycopg.AsyncConnection[Any]) -> tuple[TaskRow | None, bool]:
        created = await tasks.insert_task(conn, uuid.uuid4(), new)
        if created is not None:
            await notify_wakeup(conn, Topic.TASKS)
            return created, True
        return await tasks.get_task_by_idempotency_key(conn, key), False

    task, created = await in_transaction(pool_of(request), insert)
    if task is None:  # the key's task was deleted between the two statements
        raise HTTPException(409, "Idempotency-Key conflict, retry the request")
    if not created and task.request_hash != fingerprint:
        raise HTTPException(409, "Idempotency-Key was already used with a different request body")
    return JSONResponse(task_status_view(task), status_code=201 if created else 200)


async def load_task(request: Request, task_id: uuid.UUID) -> TaskRow:
    async with pool_of(request).connection() as conn:
        task = await tasks.get_task(conn, task_id)
    if task is None:
        raise HTTPException(404, f"no task with id {task_id}")
    return task


@router.get("/status")
async def task_status(request: Request, task_id: Annotated[str, Query()]) -> dict[str, Any]:
    """The current state of one task."""
    return task_status_view(await load_task(request, parse_task_id(task_id)))


@router.get("/tasks")
async def list_tasks(
    request: Request,
    task_ids: Annotated[list[str] | None, Query(alias="id", max_length=MAX_PAGE)] = None,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    before: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Tasks named by `id` (repeat it, up to 500), or a page of tasks newest first, optionally
    of one status; pass next_cursor back as `before` for the next page."""
    async with pool_of(request).connection() as conn:
        if task_ids:
            ids = [parse_task_id(raw) for raw in task_ids]
            return {"tasks": [task_status_view(t) for t in await tasks.get_tasks(conn, ids)]}
        cursor = parse_uuid(before, "before") if before is not None else None
        page = await tasks.list_tasks(conn, status, cursor, limit)
    return {
        "tasks": [task_status_view(t) for t in page],
        "next_cursor": str(page[-1].id) if len(page) == limit else None,
    }


@router.get("/tasks/{task_id}")
async def task_detail(request: Request, task_id: str) -> dict[str, Any]:
    """One task with every attempt made to run it."""
    tid = parse_task_id(task_id)
    async with pool_of(request).connection() as conn:
        task = await tasks.get_task(conn, tid)
        attempts = await tasks.list_attempts(conn, tid) if task else []
    if task is None:
        raise HTTPException(404, f"no task with id {tid}")
    return task_detail_view(task, attempts)


@router.post("/tasks/{task_id}/cancel")
async def cancel_task(request: Request, task_id: str) -> dict[str, Any]:
    """Cancel a task: at once when queued; a running attempt is stopped on its worker."""
    tid = parse_task_id(task_id)

    async def cancel(conn: psycopg.AsyncConnection[Any]) -> TaskRow | None:
        current = await tasks.lock_task(conn, tid)
        if current is None or TaskStatus(current.status).finished:
            return current
        (cancelled,) = await tasks.cancel_tasks(conn, [tid])  # locked, and not finished
        await notify_wakeup(conn, Topic.STOPS)
        return cancelled

    task = await in_transaction(pool_of(request), cancel)
    if task is None:
        raise HTTPException(404, f"no task with id {tid}")
    if task.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        raise HTTPException(409, f"task {tid} already finished as {task.status}")
    return await task_detail(request, task_id)


@router.post("/tasks/{task_id}/retry")
async def retry_task(request: Request, task_id: str) -> dict[str, Any]:
    """Queue a failed task again, with its retries restored."""
    tid = parse_task_id(task_id)

    async def requeue(conn: psycopg.AsyncConnection[Any]) -> TaskRow | None:
        task = await tasks.requeue_failed_task(conn, tid)
        if task is not None:
            await notify_wakeup(conn, Topic.TASKS)
        return task

    try:
        task = await in_transaction(pool_of(request), requeue)
    except psycopg.errors.UniqueViolation:
        # tasks_one_exclusive_run: another run of its schedule (overlap skip) is unfinished
        raise HTTPException(409, "another run of this task's schedule has not finished") from None
    if task is None:
        existing = await load_task(request, tid)
        raise HTTPException(409, f"only failed tasks can be retried; task is {existing.status}")
    return await task_detail(request, task_id)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The database answers and its schema is the one this code queries."""
    try:
        async with pool_of(request).connection(timeout=2) as conn:
            version = await migrate.schema_version(conn)
    except (psycopg.Error, PoolTimeout) as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {exc}"[:300]}, 503)
    expected = migrate.latest_version()
    if version != expected:
        detail = f"schema version {version}, expected {expected}"
        return JSONResponse({"status": "unavailable", "detail": detail}, 503)
    return JSONResponse({"status": "ok", "schema_version": version})


async def json_bodies_only(request: Request) -> None:
    """A request body must be declared JSON: say so instead of failing on undecoded bytes."""
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if has_body and not (media == "application/json" or media.endswith("+json")):
        raise HTTPException(415, "Content-Type must be application/json")


def error_body(detail: Any) -> dict[str, Any]:
    return {"detail": detail}


async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Echo where and what, never the (possibly huge) input itself.
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse(error_body(errors), status_code=422)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(error_body(exc.detail), status_code=exc.status_code)


async def on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return JSONResponse(error_body("database unavailable, try again shortly"), status_code=503)


class BodySizeLimit:
    """Answer 413 to request bodies over the limit instead of reading them into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self.reject(send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, f"request body larger than {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def reject(self, send: Send) -> None:
        body = json.dumps(error_body(f"request body larger than {self.limit} bytes")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(config: SchedulerConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        pool = make_pool(config.database_url, 1, config.pool_max_size, "skiplock-scheduler")
        migrator = asyncio.create_task(migrate.migrate_until_done(config.database_url, stop))
        await pool.open(wait=False)
        app.state.pool = pool
        app.state.inserter = TaskInserter(pool)
        try:
            yield
        finally:
            stop.set()
            await migrator
            await pool.close()

    app = FastAPI(
        title="skiplock scheduler",
        description="Schedule shell commands once or on cron schedules; read what happened.",
        version="1.0",
        lifespan=lifespan,
        dependencies=[Depends(json_bodies_only)],
    )
    app.include_router(router)
    app.include_router(schedules_router)
    app.include_router(dashboard_router)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(psycopg.OperationalError, on_database_unavailable)
    app.add_exception_handler(PoolTimeout, on_database_unavailable)
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES)
    return app
