"""What a cron tick or a manual trigger does, decided in one pure function.

A tick is decided by its age when a pass sees it, then by the overlap policy:
  - before the schedule's active_from (a resume) or while it is paused: skipped_paused;
  - older than the catch-up window: missed (the coordinators were down or far behind);
  - otherwise it runs, unless a run of its schedule is unfinished: with `allow` it starts
    anyway, with `skip` it is skipped_overlap, with `cancel_previous` it cancels the
    unfinished runs and starts (cancelled_previous).
A manual trigger is decided like a tick that runs, whatever the pause and its age.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from store.vocabulary import OverlapPolicy, TickOutcome


class Schedule(Protocol):
    """What deciding a tick needs to know about its schedule (a row, or a claimed one)."""

    @property
    def overlap(self) -> str: ...
    @property
    def paused(self) -> bool: ...
    @property
    def active_from(self) -> datetime: ...
    @property
    def catchup_window_seconds(self) -> int: ...


@dataclass(frozen=True)
class Tick:
    fire_time: datetime
    seen_at: datetime  # the instant that counts as now for the pass that decides it
    run_id: UUID  # the id its run gets, if it starts one


@dataclass(frozen=True)
class Decision:
    outcome: TickOutcome
    cancel: tuple[UUID, ...] = ()  # unfinished runs that this tick cancels


def decide_tick(schedule: Schedule, unfinished: Sequence[UUID], tick: Tick | None) -> Decision:
    """The outcome of a tick (None: a manual trigger) given its schedule's unfinished runs."""
    if tick is not None:
        if schedule.paused or tick.fire_time < schedule.active_from:
            return Decision(TickOutcome.SKIPPED_PAUSED)
        if tick.fire_time < tick.seen_at - timedelta(seconds=schedule.catchup_window_seconds):
            return Decision(TickOutcome.MISSED)
    policy = OverlapPolicy(schedule.overlap)
    if not unfinished or policy == OverlapPolicy.ALLOW:
        return Decision(TickOutcome.STARTED)
    if policy == OverlapPolicy.SKIP:
        return Decision(TickOutcome.SKIPPED_OVERLAP)
    return Decision(TickOutcome.CANCELLED_PREVIOUS, cancel=tuple(unfinished))


@dataclass(frozen=True)
class DecidedTick:
    fire_time: datetime
    outcome: TickOutcome
    run_id: UUID | None  # the run it started
    run_cancelled: bool = False  # that run was cancelled by a later tick of the same pass


def decide_ticks(
    schedule: Schedule, unfinished: Sequence[UUID], ticks: Sequence[Tick]
) -> tuple[list[DecidedTick], list[UUID]]:
    """Decide a schedule's ticks in fire order, each seeing the runs started by those before
    it. Returns the decided ticks and which of the `unfinished` runs they cancel."""
    open_runs = list(unfinished)
    cancelled: set[UUID] = set()
    outcomes: list[tuple[Tick, TickOutcome]] = []
    for tick in ticks:
        decision = decide_tick(schedule, open_runs, tick)
        cancelled.update(decision.cancel)
        open_runs = [run for run in open_runs if run not in decision.cancel]
        if decision.outcome.starts_run:
            open_runs.append(tick.run_id)
        outcomes.append((tick, decision.outcome))
    decided = [
        DecidedTick(
            tick.fire_time,
            outcome,
            tick.run_id if outcome.starts_run else None,
            run_cancelled=outcome.starts_run and tick.run_id in cancelled,
        )
        for tick, outcome in outcomes
    ]
    return decided, [run for run in unfinished if run in cancelled]
