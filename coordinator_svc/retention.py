"""Retention: coordinators delete finished tasks (with their attempts and stored output) and
tick-ledger rows older than --retention, in small batches (store/retention.py), so tables stay
flat under sustained load. Any number of coordinators may prune at once: each batch skips rows
another one holds, and no batch touches what claims lock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from common.logs import get_logger
from common.loops import sleep_or_stop
from common.metrics import DATABASE_ERRORS
from coordinator_svc.config import RetentionSettings
from coordinator_svc.metrics import PRUNED
from store import retention, schedules
from store.db import DB_ERRORS, in_transaction

log = get_logger(__name__)

# Schedules whose ledger one pass looks at; the next pass goes on from the last one.
SCHEDULES_PER_PASS = 100
# Between two batches while there is more to delete: other work gets the database meanwhile.
BATCH_PAUSE = 0.05
START = UUID(int=0)


@dataclass
class PassResult:
    tasks: int = 0
    ticks: int = 0
    more: bool = False  # a batch was full: go on soon


class Pruner:
    def __init__(self, pool: AsyncConnectionPool, settings: RetentionSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.after = START

    async def prune_once(self) -> PassResult:
        """One batch of tasks and one of ticks, each its own short statement."""
        age = self.settings.age
        if age is None:
            return PassResult()

        async def work(conn: psycopg.AsyncConnection[Any]) -> PassResult:
            cutoff = await schedules.database_now(conn) - timedelta(seconds=age)
            result = PassResult()
            result.tasks = await retention.prune_tasks(conn, cutoff, self.settings.batch)
            ids = await retention.next_schedules(conn, self.after, SCHEDULES_PER_PASS)
            result.ticks = await retention.prune_ticks(
                conn, ids, cutoff, self.settings.keep_ticks, self.settings.batch
            )
            if result.ticks < self.settings.batch:  # this page is done: on to the next
                self.after = ids[-1] if len(ids) == SCHEDULES_PER_PASS else START
            # More now: a full batch, or schedules left to look at before starting over.
            result.more = (
                self.settings.batch in (result.tasks, result.ticks)
                or len(ids) == SCHEDULES_PER_PASS
            )
            return result

        result = await in_transaction(self.pool, work, atomic=False)
        PRUNED.labels("tasks").inc(result.tasks)
        PRUNED.labels("schedule_ticks").inc(result.ticks)
        if result.tasks or result.ticks:
            log.info("retention deleted old rows", tasks=result.tasks, ticks=result.ticks)
        return result


async def retention_loop(
    pool: AsyncConnectionPool, settings: RetentionSettings, stop: asyncio.Event
) -> None:
    pruner = Pruner(pool, settings)
    while not stop.is_set():
        try:
            result = await pruner.prune_once()
        except DB_ERRORS as exc:
            DATABASE_ERRORS.labels("retention").inc()
            log.warning("retention pass failed; retrying", error=str(exc))
            result = PassResult()
        await sleep_or_stop(stop, BATCH_PAUSE if result.more else settings.interval)
