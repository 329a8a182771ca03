"""Keeping the event stream's table small: any coordinator deletes expired events, a batch at
a time, so no statement holds many row locks or runs long."""

from __future__ import annotations

import asyncio
import logging

from psycopg_pool import AsyncConnectionPool

from common.loops import sleep_or_stop
from store import events
from store.db import DB_ERRORS

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 10.0
PRUNE_BATCH = 5000


async def prune_events_once(pool: AsyncConnectionPool, keep_seconds: float) -> int:
    """Delete expired events batch by batch until none is left; returns how many."""
    deleted = 0
    while True:
        async with pool.connection() as conn:
            count = await events.prune(conn, keep_seconds, PRUNE_BATCH)
        deleted += count
        if count < PRUNE_BATCH:
            return deleted


async def event_pruning_loop(pool: AsyncConnectionPool, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await prune_events_once(pool, events.KEEP_SECONDS)
        except DB_ERRORS as exc:
            log.warning("pruning events failed (%s); retrying", exc)
        await sleep_or_stop(stop, PRUNE_INTERVAL)
