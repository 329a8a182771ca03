"""What the scheduler tells operators about the tasks it accepts: one INFO line per task, and
skiplock_tasks_submitted_total."""

from __future__ import annotations

from common.logs import get_logger
from scheduler_svc.metrics import SUBMITTED
from store.models import TaskRow

log = get_logger("skiplock.tasks")


def accepted(task: TaskRow) -> None:
    """A task was written: call once per new task, whichever route made it."""
    SUBMITTED.inc()
    log.info(
        "task accepted",
        task_id=str(task.id),
        schedule_id=str(task.schedule_id) if task.schedule_id else None,
        attempt=task.attempt,
        worker_id=None,
        run_at=task.run_at.isoformat(),
    )


def accepted_batch(size: int, created: int) -> None:
    """A batch was written: one line for the batch (up to 10,000 tasks), not one per task."""
    SUBMITTED.inc(created)
    log.info("task batch accepted", tasks=size, created=created)
