"""Firing cron schedules: any number of coordinators, no leader, each tick decided once.

A pass claims due schedules with SKIP LOCKED, works out their ticks up to now, records every
tick in the ledger with its outcome, starts the runs, and moves each schedule's next_fire_at
past what it recorded, all in one transaction. Another coordinator skips the locked schedules,
and once the pass commits they are no longer due, so no tick is decided twice; the ledger's
key and the one-task-per-tick index back that up.

A tick is decided by its age when a pass sees it:
  - before the schedule's active_from (a resume) or while it is paused: skipped_paused;
  - older than the catch-up window: missed (the coordinators were down or far behind);
  - otherwise it runs, subject to the overlap policy: started, skipped_overlap or
    cancelled_previous.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from common.cronspec import CronError, CronSpec, iter_fire_times, parse
from common.loops import wait_any
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.wakeups import Wakeups
from store import schedules
from store.db import DB_ERRORS, in_transaction
from store.models import DueSchedule
from store.wakeups import Topic, notify_wakeup

log = logging.getLogger(__name__)

# Schedules claimed per transaction: large enough for a burst, short enough to hold locks briefly.
BATCH = 500
# Ticks of one schedule recorded per pass; a long outage is worked off over several passes.
MAX_TICKS_PER_PASS = 1000
# A schedule whose fire times cannot be computed (e.g. its zone vanished) is retried this late.
POSTPONE_BROKEN = timedelta(minutes=5)

Tick = tuple[UUID, datetime, str]  # schedule id, fire time, intent: run | missed | skipped_paused


@dataclass
class PassResult:
    claimed: int = 0
    planned: int = 0  # ticks this pass decided (each tick is decided by exactly one pass)
    outcomes: Counter[str] = field(default_factory=Counter)
    full: bool = False  # a whole batch was claimed: more may be due right now

    @property
    def topics(self) -> list[Topic]:
        """What the pass gave other loops to do: runs to dispatch, runs to stop."""
        wanted = {
            Topic.TASKS: self.outcomes["started"] + self.outcomes["cancelled_previous"],
            Topic.STOPS: self.outcomes["cancelled_previous"],
        }
        return [topic for topic, count in wanted.items() if count]


@functools.lru_cache(maxsize=4096)
def spec_of(cron: str, timezone: str) -> CronSpec:
    return parse(cron, timezone)


# Fire times from a schedule's next_fire_at up to now, and the one after them. Many schedules
# share an expression and a due time (a burst, or "every minute"), so a pass computes each
# sequence once: key (cron, timezone, @every anchor, next_fire_at).
Sequences = dict[tuple[str, str, datetime | None, datetime], tuple[list[datetime], datetime]]


def fires_until(
    due: DueSchedule, limit: int, sequences: Sequences
) -> tuple[list[datetime], datetime]:
    spec = spec_of(due.cron, due.timezone)
    anchor = due.anchor_at if spec.every_seconds is not None else None
    key = (due.cron, due.timezone, anchor, due.next_fire_at)
    if key not in sequences:
        fires = [due.next_fire_at]
        for fire in iter_fire_times(spec, due.next_fire_at, due.anchor_at):
            if fire > due.now or len(fires) == limit:
                sequences[key] = (fires, fire)
                break
            fires.append(fire)
    return sequences[key]


def plan_ticks(
    due: DueSchedule, limit: int = MAX_TICKS_PER_PASS, sequences: Sequences | None = None
) -> tuple[list[Tick], datetime]:
    """The schedule's ticks from next_fire_at up to now (at most `limit`) with their intents,
    and the fire time after the last of them."""
    fires, following = fires_until(due, limit, {} if sequences is None else sequences)
    oldest_runnable = due.now - timedelta(seconds=due.catchup_window_seconds)
    ticks: list[Tick] = []
    for fire in fires:
        if due.paused or fire < due.active_from:
            intent = "skipped_paused"
        elif fire < oldest_runnable:
            intent = "missed"
        else:
            intent = "run"
        ticks.append((due.id, fire, intent))
    return ticks, following


def rounds_of(plans: list[list[Tick]]) -> list[list[Tick]]:
    """Split ticks into statements: ticks that run must see the runs started by earlier ticks
    of their schedule, so the k-th run tick of each schedule goes into round k; ticks that do
    not run need no such order and all go into the first round."""
    rounds: list[list[Tick]] = [[]]
    for ticks in plans:
        runs = [t for t in ticks if t[2] == "run"]
        rounds[0].extend(t for t in ticks if t[2] != "run")
        for k, tick in enumerate(runs):
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(tick)
    return [r for r in rounds if r]


async def fire_due(
    conn: psycopg.AsyncConnection[Any], now: datetime | None = None, batch: int = BATCH
) -> PassResult:
    """One pass in the caller's transaction; `now` None means the database clock."""
    due = await schedules.claim_due_schedules(conn, now, batch)
    result = PassResult(claimed=len(due), full=len(due) == batch)
    if not due:
        return result
    plans: list[list[Tick]] = []
    next_fire_at: dict[UUID, datetime] = {}
    sequences: Sequences = {}
    for schedule in due:
        try:
            ticks, next_fire_at[schedule.id] = plan_ticks(schedule, sequences=sequences)
        except CronError as exc:
            log.error("schedule %s cannot be computed (%s); retrying later", schedule.id, exc)
            next_fire_at[schedule.id] = schedule.now + POSTPONE_BROKEN
            continue
        plans.append(ticks)
        result.planned += len(ticks)
    overlap = {s.id: s.overlap for s in due}
    for ticks in rounds_of(plans):
        to_cancel = [t[0] for t in ticks if t[2] == "run" and overlap[t[0]] == "cancel_previous"]
        cancelled = await schedules.cancel_unfinished_runs(conn, to_cancel) if to_cancel else []
        result.outcomes.update(
            await schedules.record_ticks(
                conn, ticks, sorted({run.schedule_id for run in cancelled}), due[0].now
            )
        )
    await schedules.advance_schedules(conn, next_fire_at)
    if result.topics:  # other coordinators' dispatchers and stop loops
        await notify_wakeup(conn, *result.topics)
    return result


async def cron_loop(
    pool: AsyncConnectionPool, config: CoordinatorConfig, wakeups: Wakeups, stop: asyncio.Event
) -> None:
    """Fire due schedules; sleep until the next fire time, a wake-up or the poll interval."""
    while not stop.is_set():
        wakeups.cron.clear()
        try:
            result = await in_transaction(pool, fire_due)
            for topic in result.topics:
                wakeups.on(topic)
            delay = 0.0 if result.full else await next_fire_delay(pool, config.poll_interval)
        except DB_ERRORS as exc:
            log.warning("firing schedules failed (%s); retrying", exc)
            delay = config.poll_interval
        if delay > 0:
            await wait_any([stop, wakeups.cron], delay)


async def next_fire_delay(pool: AsyncConnectionPool, cap: float) -> float:
    async with pool.connection() as conn:
        seconds = await schedules.seconds_until_next_fire(conn)
    return cap if seconds is None else min(max(seconds, 0.0), cap)
