"""Connections: an async pool per service, and a retry wrapper for short transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors after which the same transaction may simply be run again.
RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


def make_pool(conninfo: str, min_size: int, max_size: int, name: str) -> AsyncConnectionPool:
    """A pool that is not opened yet: open it in the service's lifespan, never at import.

    The pool checks connections on checkout, so after a database restart the first use gets a
    fresh connection instead of a dead one.
    """
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        timeout=10.0,
        check=AsyncConnectionPool.check_connection,
        kwargs={"connect_timeout": 5, "application_name": name},
    )


async def in_transaction(
    pool: AsyncConnectionPool,
    work: Callable[[AsyncConnection[Any]], Awaitable[T]],
    attempts: int = 5,
) -> T:
    """Run `work` in one transaction, again on deadlock or serialization failure."""
    for attempt in range(1, attempts + 1):
        try:
            async with pool.connection() as conn, conn.transaction():
                return await work(conn)
        except RETRYABLE:
            if attempt == attempts:
                raise
            log.info("transaction conflict, retrying (%d/%d)", attempt, attempts)
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")
