"""What a tick or a manual trigger does, decided by one pure function: table tests, no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from store.ticks import DecidedTick, Tick, decide_tick, decide_ticks
from store.vocabulary import OverlapPolicy, TickOutcome

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
OLD_RUN = UUID(int=1)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Schedule:
    overlap: str = OverlapPolicy.ALLOW
    paused: bool = False
    active_from: datetime = T0
    catchup_window_seconds: int = 60


def tick(fire: float, seen: float = 100.0) -> Tick:
    return Tick(s(fire), s(seen), uuid4())


@pytest.mark.parametrize(
    ("schedule", "unfinished", "fire", "outcome", "cancels"),
    [
        # age first: a paused schedule or a tick before active_from never runs
        (Schedule(paused=True), [], 90, TickOutcome.SKIPPED_PAUSED, False),
        (Schedule(active_from=s(95)), [], 90, TickOutcome.SKIPPED_PAUSED, False),
        (Schedule(paused=True), [OLD_RUN], 10, TickOutcome.SKIPPED_PAUSED, False),
        # older than the catch-up window (seen at 100 s, window 60 s): missed, whatever runs
        (Schedule(), [], 39, TickOutcome.MISSED, False),
        (Schedule(overlap=OverlapPolicy.CANCEL_PREVIOUS), [OLD_RUN], 39, TickOutcome.MISSED, False),
        (Schedule(), [], 40, TickOutcome.STARTED, False),
        # then the overlap policy
        (Schedule(overlap=OverlapPolicy.ALLOW), [OLD_RUN], 90, TickOutcome.STARTED, False),
        (Schedule(overlap=OverlapPolicy.SKIP), [], 90, TickOutcome.STARTED, False),
        (Schedule(overlap=OverlapPolicy.SKIP), [OLD_RUN], 90, TickOutcome.SKIPPED_OVERLAP, False),
        (Schedule(overlap=OverlapPolicy.CANCEL_PREVIOUS), [], 90, TickOutcome.STARTED, False),
        (
            Schedule(overlap=OverlapPolicy.CANCEL_PREVIOUS),
            [OLD_RUN],
            90,
            TickOutcome.CANCELLED_PREVIOUS,
            True,
        ),
        # a manual trigger (no tick) runs whatever the pause, under the overlap policy
        (Schedule(paused=True), [], None, TickOutcome.STARTED, False),
        (
            Schedule(overlap=OverlapPolicy.SKIP, paused=True),
            [OLD_RUN],
            None,
            TickOutcome.SKIPPED_OVERLAP,
            False,
        ),
        (
            Schedule(overlap=OverlapPolicy.CANCEL_PREVIOUS),
            [OLD_RUN],
            None,
            TickOutcome.CANCELLED_PREVIOUS,
            True,
        ),
    ],
)
def test_one_tick(
    schedule: Schedule,
    unfinished: list[UUID],
    fire: float | None,
    outcome: TickOutcome,
    cancels: bool,
) -> None:
    decision = decide_tick(schedule, unfinished, None if fire is None else tick(fire))
    assert decision.outcome == outcome
    assert decision.cancel == (tuple(unfinished) if cancels else ())


def outcomes(decided: list[DecidedTick]) -> list[tuple[TickOutcome, bool]]:
    return [(d.outcome, d.run_cancelled) for d in decided]


def test_a_pass_with_skip_starts_one_run_and_skips_the_ticks_after_it() -> None:
    ticks = [tick(f) for f in (70, 80, 90)]
    decided, cancelled = decide_ticks(Schedule(overlap=OverlapPolicy.SKIP), [], ticks)
    assert outcomes(decided) == [
        (TickOutcome.STARTED, False),
        (TickOutcome.SKIPPED_OVERLAP, False),
        (TickOutcome.SKIPPED_OVERLAP, False),
    ]
    assert [d.run_id for d in decided] == [ticks[0].run_id, None, None]
    assert cancelled == []


def test_a_pass_with_cancel_previous_cancels_each_run_by_the_next_tick() -> None:
    ticks = [tick(f) for f in (70, 80, 90)]
    decided, cancelled = decide_ticks(
        Schedule(overlap=OverlapPolicy.CANCEL_PREVIOUS), [OLD_RUN], ticks
    )
    # The run from before the pass is cancelled by the first tick; the runs of the first two
    # ticks are cancelled by the tick after each, so they are created cancelled.
    assert outcomes(decided) == [
        (TickOutcome.CANCELLED_PREVIOUS, True),
        (TickOutcome.CANCELLED_PREVIOUS, True),
        (TickOutcome.CANCELLED_PREVIOUS, False),
    ]
    assert [d.run_id for d in decided] == [t.run_id for t in ticks]
    assert cancelled == [OLD_RUN]


def test_a_pass_with_allow_starts_every_runnable_tick() -> None:
    ticks = [tick(f) for f in (30, 70, 80)]
    decided, cancelled = decide_ticks(Schedule(), [OLD_RUN], ticks)
    assert outcomes(decided) == [
        (TickOutcome.MISSED, False),
        (TickOutcome.STARTED, False),
        (TickOutcome.STARTED, False),
    ]
    assert cancelled == []


def test_ticks_that_do_not_run_leave_the_unfinished_runs_alone() -> None:
    schedule = Schedule(overlap=OverlapPolicy.CANCEL_PREVIOUS, active_from=s(85))
    ticks = [tick(f) for f in (20, 80, 90)]
    decided, cancelled = decide_ticks(schedule, [OLD_RUN], ticks)
    assert outcomes(decided) == [
        (TickOutcome.SKIPPED_PAUSED, False),  # before active_from comes first
        (TickOutcome.SKIPPED_PAUSED, False),
        (TickOutcome.CANCELLED_PREVIOUS, False),
    ]
    assert cancelled == [OLD_RUN]
