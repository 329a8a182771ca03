"""Recovering the work of lost workers: any coordinator may do it, each attempt is ended once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from common.loops import sleep_or_stop
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.dispatcher import DB_ERRORS, Dispatcher
from store import queries
from store.db import in_transaction
from store.models import AttemptEnd, AttemptKey

log = logging.getLogger(__name__)

# How often to look for silent workers; with lost_after = 3 s a dead worker's attempts are
# ended within lost_after + this interval of its last heartbeat.
REAP_INTERVAL = 0.25


async def reap_once(dispatcher: Dispatcher, config: CoordinatorConfig) -> int:
    async def find(conn: psycopg.AsyncConnection[Any]) -> list[AttemptKey]:
        lost = await queries.declare_lost_workers(conn, config.lost_after)
        if lost:
            log.warning("declared lost (no heartbeat for %.0fs): %s", config.lost_after, lost)
        return await queries.open_attempts_of_lost_workers(conn, 500)

    keys = await in_transaction(dispatcher.pool, find)
    for key in keys:
        end = AttemptEnd(key.task_id, key.attempt, "failed", "worker_lost", consumes_retry=True)
        await dispatcher.end_with_retry(end)
    if keys:
        dispatcher.wakeups.dispatch.set()
    return len(keys)


async def reaper_loop(
    dispatcher: Dispatcher, config: CoordinatorConfig, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            await reap_once(dispatcher, config)
        except DB_ERRORS as exc:
            log.warning("lost-worker scan failed (%s); retrying", exc)
        await sleep_or_stop(stop, REAP_INTERVAL)
