"""The fleet: every worker with its slots, heartbeat and state, and the attempts one holds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from scheduler_svc.deps import Pool
from scheduler_svc.view_models import HeldAttempt, Worker, WorkerDetail, WorkerList
from store import workers

router = APIRouter()


@router.get("/workers")
async def list_workers(pool: Pool) -> WorkerList:
    """Every worker that has ever heartbeated, by id; lost ones included."""
    async with pool.connection() as conn:
        rows = await workers.list_workers(conn)
    return WorkerList(workers=[Worker.of(row) for row in rows])


@router.get("/workers/{worker_id}")
async def worker_detail(
    pool: Pool, worker_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> WorkerDetail:
    """One worker and the attempts it holds open."""
    row = None
    if "\x00" not in worker_id:  # PostgreSQL text holds no NUL, so no worker has one
        async with pool.connection() as conn:
            row = await workers.get_worker(conn, worker_id)
            held = await workers.open_attempts_of_worker(conn, worker_id) if row else []
    if row is None:
        raise HTTPException(404, f"no worker with id {worker_id!r}")
    return WorkerDetail(**Worker.of(row).model_dump(), attempts=[HeldAttempt.of(a) for a in held])
