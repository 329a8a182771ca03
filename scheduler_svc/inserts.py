"""Group commit for POST /schedule: requests that arrive while a batch is being written are
written together in the next one, so a burst costs one statement and one commit per batch
instead of one per task. A request waits at most for the batch before its own: nothing waits
on a timer."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from store import tasks
from store.db import in_transaction
from store.models import NewTask, TaskRow

log = logging.getLogger(__name__)

MAX_BATCH = 500
Pending = tuple[uuid.UUID, NewTask, "asyncio.Future[TaskRow]"]


class TaskInserter:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._queue: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, new: NewTask) -> TaskRow:
        """Insert a task without an idempotency key; returns its row once committed."""
        future: asyncio.Future[TaskRow] = asyncio.get_running_loop().create_future()
        self._queue.append((uuid.uuid4(), new, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        return await future

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                rows = await self._write(batch)
            except Exception as exc:  # every waiting request answers with the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for task_id, _, future in batch:
                if not future.done():
                    future.set_result(rows[task_id])

    async def _write(self, batch: list[Pending]) -> dict[uuid.UUID, TaskRow]:
        new = [(task_id, task) for task_id, task, _ in batch]

        async def insert(conn: psycopg.AsyncConnection[Any]) -> list[TaskRow]:
            return await tasks.insert_tasks(conn, new)

        try:
            rows = await in_transaction(self._pool, insert, atomic=False)
        except (psycopg.DataError, psycopg.IntegrityError):
            if len(batch) == 1:
                raise
            # One row the database refuses must not fail the others: write them one by one.
            log.warning("batch insert refused, inserting %d tasks singly", len(batch))
            return await self._write_singly(batch)
        return {row.id: row for row in rows}

    async def _write_singly(self, batch: list[Pending]) -> dict[uuid.UUID, TaskRow]:
        rows: dict[uuid.UUID, TaskRow] = {}
        for task_id, task, future in batch:
            try:
                rows |= await self._write([(task_id, task, future)])
            except Exception as exc:
                future.set_exception(exc)
        return rows
