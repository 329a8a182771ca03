"""What the coordinator tells operators when an attempt moves: one INFO line per transition,
with the task, attempt, worker and schedule as fields, and the metrics that count them."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from common.logs import get_logger
from coordinator_svc.metrics import ATTEMPTS_ENDED, HANDOVERS, RUN_DURATION, START_DELAY
from store.models import ClaimedAttempt, EndedAttempt, StartedAttempt

log = get_logger("skiplock.tasks")


def ids(task_id: UUID, schedule_id: UUID | None) -> dict[str, str | None]:
    return {"task_id": str(task_id), "schedule_id": str(schedule_id) if schedule_id else None}


def handed_over(attempts: Iterable[ClaimedAttempt]) -> None:
    for a in attempts:
        HANDOVERS.labels("accepted").inc()
        log.info(
            "task dispatched",
            **ids(a.task_id, a.schedule_id),
            attempt=a.attempt,
            worker_id=a.worker_id,
        )


def started(attempts: Iterable[StartedAttempt]) -> None:
    for a in attempts:
        if a.first:
            START_DELAY.observe(a.start_delay)
            log.info(
                "task started",
                **ids(a.task_id, a.schedule_id),
                attempt=a.attempt,
                worker_id=a.worker_id,
                start_delay_seconds=round(a.start_delay, 6),
            )


def ended(attempts: Iterable[EndedAttempt]) -> None:
    for a in attempts:
        start = a.as_started()
        if start is not None:
            started([start])
        duration = a.duration
        ATTEMPTS_ENDED.labels(a.status, a.reason or "none").inc()
        if duration is not None:
            RUN_DURATION.observe(duration)
        log.info(
            "task ended",
            **ids(a.task_id, a.schedule_id),
            attempt=a.attempt,
            worker_id=a.worker_id,
            status=a.status,
            reason=a.reason,
            exit_code=a.exit_code,
            duration_seconds=None if duration is None else round(duration, 6),
            task_status=a.task_status,
        )
