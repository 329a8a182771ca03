"""Liveness and readiness."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from scheduler_svc.deps import Pool
from store import migrate

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(pool: Pool) -> JSONResponse:
    """The database answers and its schema is the one this code queries."""
    try:
        async with pool.connection(timeout=2) as conn:
            version = await migrate.schema_version(conn)
    except (psycopg.Error, PoolTimeout) as exc:
        return JSONResponse({"status": "unavailable", "detail": f"database: {exc}"[:300]}, 503)
    expected = migrate.latest_version()
    if version != expected:
        detail = f"schema version {version}, expected {expected}"
        return JSONResponse({"status": "unavailable", "detail": detail}, 503)
    return JSONResponse({"status": "ok", "schema_version": version})
