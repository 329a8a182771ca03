"""The services' connection pool against real PostgreSQL: a connection idle for longer than
CHECK_IF_IDLE_SECONDS is checked when handed out, so one whose server session died is replaced
before a request gets it; one handed out more recently is not (no round trip)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from store import db as store_db
from store.db import make_pool


async def serve_after_its_session_died(database_url: str) -> int | str:
    """Check out a connection, kill its server session, check out again and query."""
    pool = make_pool(database_url, 1, 1, "skiplock-pool-test")
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        try:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT 1")
                row = await cur.fetchone()
                assert row is not None and conn.info.backend_pid != pid
                return int(row[0])
        except psycopg.OperationalError:
            return "failed"
    finally:
        await pool.close()


@pytest.mark.parametrize(("idle_limit", "outcome"), [(0.0, 1), (3600.0, "failed")])
def test_an_idle_connection_is_checked_and_a_recent_one_is_not(
    database_url, monkeypatch, idle_limit, outcome
):
    monkeypatch.setattr(store_db, "CHECK_IF_IDLE_SECONDS", idle_limit)
    assert asyncio.run(serve_after_its_session_died(database_url)) == outcome
