"""Connections: an async pool per service, a retry wrapper for short transactions, and the
helpers every statement module (tasks, dispatch, schedules) shares."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import psycopg._queries
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
Conn = AsyncConnection[Any]
Params = Mapping[str, Any]

# No JIT on pooled connections: statements here are short, and a plan the planner overestimates
# (the claim's per-queue scans, whose LIMIT is known only at run time) would spend a second or
# more compiling. A SET, not a startup option, which poolers such as PgBouncer refuse.
NO_JIT = "SET jit = off"
# psycopg converts a statement's %(name)s placeholders for the server on every execution and
# caches the result (an LRU of 128) only for statements up to 4,096 characters; the claim and
# the ending statements are longer, so each run re-parsed them (12-34 µs of the coordinator's
# CPU each). Every statement is a constant of this package, so caching them all stays bounded.
MAX_CACHED_STATEMENT_CHARS = 16384
psycopg._queries.MAX_CACHED_STATEMENT_LENGTH = max(
    psycopg._queries.MAX_CACHED_STATEMENT_LENGTH, MAX_CACHED_STATEMENT_CHARS
)
# Errors after which the same transaction may simply be run again.
RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
# Errors a background loop survives by trying again later: the database or the pool is away.
DB_ERRORS = (psycopg.Error, PoolTimeout)


# A connection handed out less than this long ago is handed out again unchecked (it has been
# idle no longer than that): a round trip per checkout would cost more than everything else a
# short request does.
CHECK_IF_IDLE_SECONDS = 1.0


class _RecentUse:
    """Remembers when each pooled connection was last handed out, so checks can skip busy ones.
    Not when it was returned: that needs the pool's `reset` hook, which sends every return
    through the pool's worker task (about 12 µs more per checkout), and a connection is idle no
    longer since its return than since it was handed out."""

    def __init__(self) -> None:
        self._handed_out: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = (
            weakref.WeakKeyDictionary()
        )

    async def check(self, conn: AsyncConnection[Any]) -> None:
        now = time.monotonic()
        last = self._handed_out.get(conn)
        if last is None or now - last > CHECK_IF_IDLE_SECONDS:
            await AsyncConnectionPool.check_connection(conn)
        self._handed_out[conn] = now


async def no_jit(conn: AsyncConnection[Any]) -> None:
    await conn.execute(NO_JIT)


def make_pool(conninfo: str, min_size: int, max_size: int, name: str) -> AsyncConnectionPool:
    """A pool that is not opened yet: open it in the service's lifespan, never at import.

    Connections idle for more than a second are checked on checkout, so after a database
    restart a request gets a fresh connection instead of a dead one; a connection in steady use
    is not, and one that died under it fails that request (the pool then drops it).
    """
    recent = _RecentUse()
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        timeout=10.0,
        check=recent.check,
        # Autocommit: a single statement needs no BEGIN/COMMIT round trips; `in_transaction`
        # opens explicit transactions where several statements must commit together.
        configure=no_jit,
        kwargs={"connect_timeout": 5, "application_name": name, "autocommit": True},
    )


async def in_transaction(
    pool: AsyncConnectionPool,
    work: Callable[[AsyncConnection[Any]], Awaitable[T]],
    attempts: int = 5,
    *,
    atomic: bool = True,
) -> T:
    """Run `work` in one transaction, again on deadlock or serialization failure.

    With atomic=False each statement of `work` commits on its own (pooled connections are in
    autocommit mode), which saves the BEGIN and COMMIT round trips where that is enough.
    """
    for attempt in range(1, attempts + 1):
        try:
            async with pool.connection() as conn:
                if not atomic:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)
        except RETRYABLE:
            if attempt == attempts:
                raise
            log.info("transaction conflict, retrying (%d/%d)", attempt, attempts)
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


async def fetch_one(conn: Conn, row: type[R], statement: str, params: Params) -> R | None:
    """The statement's first row as a `row`, or None."""
    cur = conn.cursor(row_factory=class_row(row))
    await cur.execute(statement, params)
    return await cur.fetchone()


async def fetch_value(conn: Conn, statement: str, params: Params | None = None) -> Any:
    """The first column of the statement's first row, or None when it returns no row."""
    cur = await conn.execute(statement, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def fetch_all(conn: Conn, row: type[R], statement: str, params: Params) -> list[R]:
    """Every row of the statement as `row`s."""
    cur = conn.cursor(row_factory=class_row(row))
    await cur.execute(statement, params)
    return await cur.fetchall()


def unnest_arrays(items: Sequence[Any], **columns: str) -> dict[str, list[Any]]:
    """Parallel arrays for unnest(): parameter name -> that attribute of every item."""
    return {param: [getattr(item, attr) for item in items] for param, attr in columns.items()}


def json_records(items: Sequence[Any], *columns: str) -> str:
    """Those attributes of each item as one JSON array of objects, for jsonb_to_recordset: one
    statement parameter, where an array per column cost psycopg about 10 µs each to adapt."""
    rows = [{column: getattr(item, column) for column in columns} for item in items]
    return json_array(rows)


def json_array(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as JSON for jsonb_to_recordset: ids as text, times in ISO 8601 with their offset."""
    return json.dumps(rows, default=_json_default, allow_nan=False)


def _json_default(value: object) -> str:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no JSON form here")
