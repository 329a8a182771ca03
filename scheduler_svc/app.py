"""The FastAPI application factory: the lifespan owns the pool, the routers come from
scheduler_svc/routes/, errors are answered by scheduler_svc/errors.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler_svc import auth, openapi
from scheduler_svc.backpressure import Backlog
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.errors import (
    BODY_LIMITS,
    MAX_BODY_BYTES,
    BodySizeLimit,
    json_bodies_only,
    no_unknown_query_parameters,
    on_database_unavailable,
    on_http_error,
    on_validation_error,
)
from scheduler_svc.inserts import TaskInserter
from scheduler_svc.routes import ROUTERS
from store import migrate
from store.db import make_pool


def create_app(config: SchedulerConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        pool = make_pool(config.database_url, 1, config.pool_max_size, "skiplock-scheduler")
        migrator = asyncio.create_task(migrate.migrate_until_done(config.database_url, stop))
        await pool.open(wait=False)
        app.state.pool = pool
        app.state.inserter = TaskInserter(pool)
        app.state.backlog = Backlog(pool, config.backlog)
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
        # skiplock reports through Prometheus metrics and structured logs; FastAPI's own
        # OpenTelemetry bridge would otherwise look for configured providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        dependencies=[Depends(json_bodies_only), Depends(no_unknown_query_parameters)],
    )
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(psycopg.OperationalError, on_database_unavailable)
    app.add_exception_handler(PoolTimeout, on_database_unavailable)
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES, larger=BODY_LIMITS)
    # Outermost: nothing reads a request before its token is checked.
    app.add_middleware(auth.ApiTokenGuard, book=auth.TokenBook(config.api_tokens))
    fastapi_openapi = app.openapi
    tokens = bool(config.api_tokens)
    app.openapi = lambda: openapi.describe(fastapi_openapi(), tokens)  # type: ignore[method-assign]
    return app
