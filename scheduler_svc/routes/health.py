"""Liveness and readiness."""

from __future__ import annotations

import asyncio

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field

from scheduler_svc.deps import Pool
from store import migrate

router = APIRouter()
READY_WITHIN = 0.8  # seconds /readyz waits for the database at most


class Alive(BaseModel):
    status: str = Field(description="ok")


class Ready(BaseModel):
    status: str = Field(description="ok")
    schema_version: int


@router.get("/healthz", response_model=Alive)
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready)
async def readyz(pool: Pool) -> JSONResponse:
    """The database answers and its schema is the one this code queries."""
    try:
        # Bounded as a whole, so a probe (1 s by default in Kubernetes) always gets its answer.
        async with asyncio.timeout(READY_WITHIN):
            async with pool.connection(timeout=READY_WITHIN) as conn:
                version = await migrate.schema_version(conn)
    except (psycopg.Error, PoolTimeout, TimeoutError) as exc:
        detail = f"database: {exc or f'no answer within {READY_WITHIN:g} s'}"
        return JSONResponse({"status": "unavailable", "detail": detail[:300]}, 503)
    expected = migrate.latest_version()
    if version != expected:
        detail = f"schema version {version}, expected {expected}"
        return JSONResponse({"status": "unavailable", "detail": detail}, 503)
    return JSONResponse({"status": "ok", "schema_version": version})
