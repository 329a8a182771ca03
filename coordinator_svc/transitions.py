"""What the coordinator tells operators when an attempt moves: one INFO line per transition,
with the task, attempt, worker and schedule as fields, and the metrics that count them."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from common.logs import get_logger
from coordinator_svc.metrics import ATTEMPTS_ENDED, HANDOVERS, RUN_DURATION, START_DELAY
from store.models import ClaimedAttempt, EndedAttempt, StartedAttempt

log = get_logger("skiplock.tasks")

# Counted per attempt: the labelled children are looked up once, not at every transition.
ACCEPTED = HANDOVERS.labels("accepted")


@functools.cache
def ended_counter(status: str, reason: str | None) -> Any:
    return ATTEMPTS_ENDED.labels(status, reason or "none")


def handed_over(attempts: Iterable[ClaimedAttempt]) -> None:
    for a in attempts:
        ACCEPTED.inc()
        log.info(
            "task dispatched",
            task_id=str(a.task_id),
            schedule_id=a.schedule_id and str(a.schedule_id),
            attempt=a.attempt,
            worker_id=a.worker_id,
        )


def started(attempts: Iterable[StartedAttempt]) -> None:
    for a in attempts:
        if a.first:
            START_DELAY.observe(a.start_delay)
            log.info(
                "task started",
                task_id=str(a.task_id),
                schedule_id=a.schedule_id and str(a.schedule_id),
                attempt=a.attempt,
                worker_id=a.worker_id,
                start_delay_seconds=round(a.start_delay, 6),
            )


def ended(attempts: Iterable[EndedAttempt]) -> None:
    """One line per ending. When the ending is also how the start became known (the command
    ended before its start report was sent, as most short commands do), the start is not a line
    of its own: this line carries its `start_delay_seconds`."""
    for a in attempts:
        start = a.as_started()
        also: dict[str, float] = {}
        if start is not None:
            START_DELAY.observe(start.start_delay)
            also["start_delay_seconds"] = round(start.start_delay, 6)
        duration = a.duration
        ended_counter(a.status, a.reason).inc()
        if duration is not None:
            RUN_DURATION.observe(duration)
        log.info(
            "task ended",
            task_id=str(a.task_id),
            schedule_id=a.schedule_id and str(a.schedule_id),
            attempt=a.attempt,
            worker_id=a.worker_id,
            status=a.status,
            reason=a.reason,
            exit_code=a.exit_code,
            duration_seconds=None if duration is None else round(duration, 6),
            task_status=a.task_status,
            **also,
        )
