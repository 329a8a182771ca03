"""Queues: their backlog, and pausing and resuming them."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from common.routing import queue_problem
from scheduler_svc.deps import Pool
from store import queues
from store.db import in_transaction

router = APIRouter()


class QueueView(BaseModel):
    name: str
    paused: bool = Field(description="paused queues keep their tasks queued; running ones go on")
    queued: int = Field(description="tasks waiting, due or not")
    due: int = Field(description="tasks waiting that are due now")
    running: int = Field(description="tasks handed to a worker and not ended")
    workers: int = Field(description="live workers that serve the queue")


class QueueList(BaseModel):
    queues: list[QueueView]


def check_name(name: str) -> str:
    if problem := queue_problem(name):
        raise HTTPException(422, problem)
    return name


async def set_paused(pool: Pool, name: str, paused: bool) -> dict[str, Any]:
    check_name(name)

    async def change(conn: psycopg.AsyncConnection[Any]) -> list[queues.QueueRow]:
        await queues.set_paused(conn, name, paused)
        return await queues.list_queues(conn)

    rows = await in_transaction(pool, change)
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
