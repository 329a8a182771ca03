"""What every route needs from the request: the app's pool and inserter, ids from the path."""

from __future__ import annotations

import uuid

from fastapi import HTTPException, Request
from psycopg_pool import AsyncConnectionPool

from scheduler_svc.inserts import TaskInserter


def pool_of(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def inserter_of(request: Request) -> TaskInserter:
    inserter: TaskInserter = request.app.state.inserter
    return inserter


def parse_uuid(raw: str, what: str) -> uuid.UUID:
    """A UUID from a path or query value, or a 422 naming the value."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise HTTPException(422, f"{what} {raw[:64]!r} is not a UUID") from None
