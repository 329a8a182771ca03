"""The system at a glance: the queue, recent outcomes, start delays, the fleet, cron ticks; and
the same per minute for charts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from scheduler_svc.deps import Pool
from scheduler_svc.view_models import (
    FinishedCounts,
    FleetCounts,
    MinuteActivity,
    StartDelay,
    Stats,
    StatsHistory,
    TaskCounts,
    TickCounts,
)
from store import stats
from store.vocabulary import TickOutcome

MAX_HISTORY_MINUTES = 360

router = APIRouter()


def stats_view(row: dict[str, Any]) -> Stats:
    p50, p95, p99 = row["delay_percentiles"] or (None, None, None)
    outcomes = row["tick_outcomes"]
    return Stats(
        at=row["at"],
        tasks=TaskCounts(
            queued_due=row["due"],
            queued_later=row["later"],
            queued_unserved=row["unserved"],
            dispatched=row["dispatched"],
            running=row["running"],
            waiting=row["waiting"],
        ),
        oldest_due_age_seconds=row["oldest_due_age"],
        finished=[
            FinishedCounts(
                minutes=minutes,
                succeeded=row[f"succeeded_{minutes}"],
                failed=row[f"failed_{minutes}"],
                cancelled=row[f"cancelled_{minutes}"],
            )
            for minutes in stats.WINDOWS
        ],
        start_delay=StartDelay(
            minutes=stats.RECENT_MINUTES, samples=row["delay_samples"], p50=p50, p95=p95, p99=p99
        ),
        fleet=FleetCounts(
            workers=row["workers"],
            lost=row["workers_lost"],
            draining=row["workers_draining"],
            slots=row["slots"],
            busy=row["busy"],
        ),
        ticks=TickCounts(
            minutes=stats.TICK_MINUTES, **{o.value: outcomes.get(o.value, 0) for o in TickOutcome}
        ),
        tasks_estimate=row["tasks_estimate"],
    )


@router.get("/stats")
async def current_stats(pool: Pool) -> Stats:
    """The backlog and its oldest due task, open attempts, tasks finished over the last 1, 5,
    15 and 60 minutes, start delay percentiles over 5 minutes, workers and slots, and cron tick
    outcomes over 15 minutes."""
    async with pool.connection() as conn:
        return stats_view(await stats.current(conn))


@router.get("/stats/history")
async def stats_history(
    pool: Pool, minutes: Annotated[int, Query(ge=1, le=MAX_HISTORY_MINUTES)] = 60
) -> StatsHistory:
    """Per minute, over the last `minutes` minutes (the current one included): tasks submitted,
    finished by status, and the start delays of those finished."""
    async with pool.connection() as conn:
        rows = await stats.history(conn, minutes)
    return StatsHistory(minutes=[MinuteActivity(**row) for row in rows])
