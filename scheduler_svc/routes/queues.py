"""Queues: their backlog, pausing and resuming them, and limiting their running tasks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from common.routing import queue_problem
from scheduler_svc.deps import Pool
from store import queues
from store.db import in_transaction

router = APIRouter()


class QueueView(BaseModel):
    name: str
    paused: bool = Field(description="paused queues keep their tasks queued; running ones go on")
    max_running: int | None = Field(
        description="at most this many of its tasks run at once, fleet-wide; null: no limit"
    )
    queued: int = Field(description="queued tasks, due or not")
    due: int = Field(description="queued tasks that are due now")
    waiting: int = Field(
        default=0, description="tasks waiting for the tasks in their after (not backlog)"
    )
    running: int = Field(description="tasks handed to a worker and not ended")
    workers: int = Field(description="live workers that serve the queue")


class QueueList(BaseModel):
    queues: list[QueueView]


# The most a queue's limit may be.
MAX_QUEUE_LIMIT = 100_000


class QueueLimit(BaseModel):
    """PUT /queues/{name}/limit: null lifts the limit."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_running: Annotated[int, Field(ge=1, le=MAX_QUEUE_LIMIT)] | None = Field(
        description=f"at most this many of the queue's tasks run at once (1..{MAX_QUEUE_LIMIT})"
        "; null: no limit"
    )


def check_name(name: str) -> str:
    if problem := queue_problem(name):
        raise HTTPException(422, problem)
    return name


async def set_paused(pool: Pool, name: str, paused: bool) -> dict[str, Any]:
    return await change_queue(pool, name, lambda conn: queues.set_paused(conn, name, paused))


async def change_queue(
    pool: Pool, name: str, change: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
) -> dict[str, Any]:
    """Make the change and answer with the queue as it then is, in one transaction."""
    check_name(name)

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[queues.QueueRow]:
        await change(conn)
        return await queues.list_queues(conn)

    rows = await in_transaction(pool, work)
    (row,) = [r for r in rows if r.name == name]
    return vars(row)


@router.get("/queues", response_model=QueueList)
async def list_queues(pool: Pool) -> dict[str, Any]:
    """Every queue that tasks, live workers or a pause name, with its backlog."""
    async with pool.connection() as conn:
        rows = await queues.list_queues(conn)
    return {"queues": [vars(r) for r in rows]}


@router.post("/queues/{name}/pause", response_model=QueueView)
async def pause_queue(pool: Pool, name: str) -> dict[str, Any]:
    """Stop handing out the queue's tasks (running ones go on); they stay queued until resumed.
    A queue may be paused before any task names it."""
    return await set_paused(pool, name, True)


@router.post("/queues/{name}/resume", response_model=QueueView)
async def resume_queue(pool: Pool, name: str) -> dict[str, Any]:
    """Hand out the queue's tasks again."""
    return await set_paused(pool, name, False)


@router.put("/queues/{name}/limit", response_model=QueueView)
async def limit_queue(pool: Pool, name: str, body: QueueLimit) -> dict[str, Any]:
    """At most max_running of the queue's tasks run at once across the fleet (null: no limit).
    Tasks already running go on when a lower limit is set; no more start until fewer run. A
    queue may be limited before any task names it. Giving a queue its first limit counts its
    running tasks, holding every claim and attempt end back for that moment."""
    return await change_queue(
        pool, name, lambda conn: queues.set_limit(conn, name, body.max_running)
    )


@router.delete("/queues/{name}/limit", response_model=QueueView)
async def unlimit_queue(pool: Pool, name: str) -> dict[str, Any]:
    """Lift the queue's limit."""
    return await change_queue(pool, name, lambda conn: queues.set_limit(conn, name, None))
