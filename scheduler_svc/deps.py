"""What routes take from the app, as typed dependencies: the pool, the inserter, parsed ids."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from psycopg_pool import AsyncConnectionPool

from scheduler_svc.backpressure import Backlog
from scheduler_svc.inserts import TaskInserter


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, two thread
# hand-offs per request for an attribute read (a fifth of the scheduler's CPU under load).
async def app_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


async def app_inserter(request: Request) -> TaskInserter:
    inserter: TaskInserter = request.app.state.inserter
    return inserter


# The connection pool the app's lifespan owns; a route parameter `pool: Pool` receives it.
Pool = Annotated[AsyncConnectionPool, Depends(app_pool)]
# The group-commit writer of POST /schedule (scheduler_svc/inserts.py).
Inserter = Annotated[TaskInserter, Depends(app_inserter)]


async def app_backlog(request: Request) -> Backlog:
    backlog: Backlog = request.app.state.backlog
    return backlog


# The backpressure check of submissions (scheduler_svc/backpressure.py).
BacklogGuard = Annotated[Backlog, Depends(app_backlog)]


def parse_uuid(raw: str, what: str) -> uuid.UUID:
    """A UUID from a path or query value, or a 422 naming the value."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise HTTPException(422, f"{what} {raw[:64]!r} is not a UUID") from None
