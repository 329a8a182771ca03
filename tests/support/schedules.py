"""Helpers for schedule tests: create schedules at a chosen instant, run cron passes at a
chosen "now", and read the ledger back — all against a real database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from common.cronspec import fire_times, parse
from coordinator_svc.cron import PassResult, fire_due
from store import schedules
from store.models import ScheduleRow, ScheduleSettings

T = TypeVar("T")

DEFAULTS = ScheduleSettings(
    name="s",
    cron="* * * * * *",
    timezone="UTC",
    command="true",
    overlap="allow",
    catchup_window_seconds=3600,
    timeout_seconds=None,
    max_retries=0,
    retry_backoff_seconds=1.0,
    paused=False,
    jitter_seconds=0.0,
)


def in_transaction(url: str, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
    """Run `work` in one transaction on a fresh connection, from synchronous test code."""

    async def run() -> T:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            return await work(conn)

    return asyncio.run(run())


def create(url: str, at: datetime, **settings: Any) -> ScheduleRow:
    """A schedule created at `at` (as POST /schedules would at that database time)."""
    chosen = replace(DEFAULTS, **({"name": f"s-{uuid.uuid4().hex[:8]}"} | settings))
    spec = parse(chosen.cron, chosen.timezone, now=at)
    first = fire_times(spec, at, at, 1)[0]

    async def insert(conn: psycopg.AsyncConnection[Any]) -> ScheduleRow:
        row = await schedules.insert_schedule(conn, uuid.uuid4(), chosen, at, first)
        assert row is not None
        return row

    return in_transaction(url, insert)


def fire(url: str, now: datetime, batch: int = 500) -> PassResult:
    """One cron pass as a coordinator would run it, with `now` as the clock."""
    return in_transaction(url, lambda conn: fire_due(conn, now, batch))


def fire_all(url: str, now: datetime) -> list[PassResult]:
    """Cron passes at `now` until nothing is due."""
    results: list[PassResult] = []
    while True:
        result = fire(url, now)
        if not result.claimed:
            return results
        results.append(result)


def ledger(db: psycopg.Connection[Any], schedule_id: uuid.UUID) -> list[tuple[datetime, str]]:
    """(fire_time, outcome) of every tick of a schedule, oldest first."""
    rows = db.execute(
        "SELECT fire_time, outcome FROM schedule_ticks WHERE schedule_id = %s ORDER BY fire_time",
        (schedule_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]
