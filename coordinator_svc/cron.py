"""Firing cron schedules: any number of coordinators, no leader, each tick decided once.

A pass claims due schedules with SKIP LOCKED, works out their ticks up to now, locks their
unfinished runs, decides every tick (store/ticks.py), cancels the runs that the decisions
cancel, records the ticks in the ledger with their runs, and moves each schedule's next_fire_at
past what it recorded, all in one transaction. Another coordinator skips the locked schedules,
and once the pass commits they are no longer due, so no tick is decided twice; the ledger's
key and the one-task-per-tick index back that up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg_pool import AsyncConnectionPool

from common.cronspec import CronError, CronSpec, iter_fire_times, parse
from common.logs import get_logger
from common.loops import wait_any
from common.metrics import DATABASE_ERRORS
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.metrics import TICK_LAG, TICKS
from coordinator_svc.wakeups import Wakeups
from store import schedules, tasks
from store.db import DB_ERRORS, in_transaction
from store.models import DueSchedule
from store.ticks import DecidedTick, Tick, decide_ticks
from store.vocabulary import OverlapPolicy, TickOutcome
from store.wakeups import Topic, notify_wakeup

log = logging.getLogger(__name__)
tick_log = get_logger("skiplock.ticks")

# Schedules claimed per transaction: large enough for a burst, short enough to hold locks briefly.
BATCH = 500
# Ticks of one schedule recorded per pass; a long outage is worked off over several passes.
MAX_TICKS_PER_PASS = 1000
# A schedule whose fire times cannot be computed (e.g. its zone vanished) is retried this late.
POSTPONE_BROKEN = timedelta(minutes=5)
# A pass that claimed nothing although a schedule was due found every due one locked by another
# coordinator's pass (claims skip locked schedules), which fires it: the loop asks again this
# much later rather than at once, over and over until that pass commits.
LOCKED_RETRY = 0.02


@dataclass
class PassResult:
    claimed: int = 0
    planned: int = 0  # ticks this pass decided (each tick is decided by exactly one pass)
    outcomes: Counter[str] = field(default_factory=Counter)
    full: bool = False  # a whole batch was claimed: more may be due right now
    lags: list[float] = field(default_factory=list)  # seconds from each tick's fire time
    ticks: list[tuple[UUID, DecidedTick]] = field(default_factory=list)  # (schedule, tick)

    @property
    def topics(self) -> list[Topic]:
        """What the pass gave other loops to do: runs to dispatch, runs to stop."""
        wanted = {
            Topic.TASKS: sum(n for o, n in self.outcomes.items() if TickOutcome(o).starts_run),
            Topic.STOPS: self.outcomes[TickOutcome.CANCELLED_PREVIOUS],
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


async def fire_due(
    conn: psycopg.AsyncConnection[Any], now: datetime | None = None, batch: int = BATCH
) -> PassResult:
    """One pass in the caller's transaction; `now` None means the database clock."""
    due = await schedules.claim_due_schedules(conn, now, batch)
    result = PassResult(claimed=len(due), full=len(due) == batch)
    if not due:
        return result
    fires: dict[UUID, list[datetime]] = {}
    next_fire_at: dict[UUID, datetime] = {}
    sequences: Sequences = {}
    for schedule in due:
        try:
            fires[schedule.id], next_fire_at[schedule.id] = fires_until(
                schedule, MAX_TICKS_PER_PASS, sequences
            )
        except CronError as exc:
            log.error("schedule %s cannot be computed (%s); retrying later", schedule.id, exc)
            next_fire_at[schedule.id] = schedule.now + POSTPONE_BROKEN
    unfinished = await unfinished_runs(conn, [s for s in due if s.id in fires])
    decided: list[tuple[UUID, DecidedTick]] = []
    to_cancel: list[UUID] = []
    for schedule in due:
        if schedule.id in fires:
            ticks = [Tick(fire, schedule.now, uuid4()) for fire in fires[schedule.id]]
            ticks_decided, cancelled = decide_ticks(schedule, unfinished[schedule.id], ticks)
            decided += [(schedule.id, tick) for tick in ticks_decided]
            result.lags += [(schedule.now - t.fire_time).total_seconds() for t in ticks_decided]
            to_cancel += cancelled
    result.planned = len(decided)
    result.ticks = decided
    await tasks.cancel_tasks(conn, to_cancel)
    result.outcomes.update(await schedules.record_ticks(conn, decided, due[0].now))
    await schedules.advance_schedules(conn, next_fire_at)
    if result.topics:  # other coordinators' dispatchers and stop loops
        await notify_wakeup(conn, *result.topics)
    return result


async def unfinished_runs(
    conn: psycopg.AsyncConnection[Any], due: list[DueSchedule]
) -> defaultdict[UUID, list[UUID]]:
    """The unfinished runs of the schedules, locked until the pass commits. Runs of `allow`
    schedules never change a decision, and locking them would hold back their dispatch."""
    watched = [s.id for s in due if s.overlap != OverlapPolicy.ALLOW]
    runs: defaultdict[UUID, list[UUID]] = defaultdict(list)
    for run in await schedules.lock_unfinished_runs(conn, watched) if watched else []:
        runs[run.schedule_id].append(run.task_id)
    return runs


async def cron_loop(
    pool: AsyncConnectionPool, config: CoordinatorConfig, wakeups: Wakeups, stop: asyncio.Event
) -> None:
    """Fire due schedules; sleep until the next fire time, a wake-up or the poll interval.

    Each round first asks, in one statement and no transaction, when the earliest schedule is
    due; only when one is due now does a pass run (its own transaction), and then the loop asks
    again. An idle round is one round trip; what the pass claims and decides is unchanged, and a
    schedule is due for the pass whenever the question saw it due (the pass's now() is later).
    """
    while not stop.is_set():
        wakeups.cron.clear()  # before the question: a change after it wakes the wait below
        try:
            delay = await next_fire_delay(pool, config.poll_interval)
            if delay == 0:
                result = await in_transaction(pool, fire_due)
                observe_pass(result)
                for topic in result.topics:
                    wakeups.on(topic)
                delay = delay_after_pass(result)
        except DB_ERRORS as exc:
            DATABASE_ERRORS.labels("cron").inc()
            log.warning("firing schedules failed (%s); retrying", exc)
            delay = config.poll_interval
        if delay > 0:
            await wait_any([stop, wakeups.cron], delay)


def delay_after_pass(result: PassResult) -> float:
    """Ask again at once after a pass that claimed schedules (more may be due); after one that
    claimed none, only LOCKED_RETRY later."""
    return 0.0 if result.claimed else LOCKED_RETRY


def observe_pass(result: PassResult) -> None:
    """Count and log a committed pass: one INFO line per decided tick."""
    for schedule_id, tick in result.ticks:
        tick_log.info(
            "tick decided",
            schedule_id=str(schedule_id),
            fire_time=tick.fire_time.isoformat(),
            outcome=tick.outcome.value,
            task_id=str(tick.run_id) if tick.run_id else None,
        )
    for outcome, n in result.outcomes.items():
        TICKS.labels(outcome).inc(n)
    for lag in result.lags:
        TICK_LAG.observe(max(lag, 0.0))


async def next_fire_delay(pool: AsyncConnectionPool, cap: float) -> float:
    async with pool.connection() as conn:
        seconds = await schedules.seconds_until_next_fire(conn)
    return cap if seconds is None else min(max(seconds, 0.0), cap)
