"""The words skiplock's rows use: statuses, end reasons, tick outcomes and overlap policies.

Each enum mirrors a `CHECK (… IN (…))` list of the DDL (tests/test_vocabulary.py compares them
with the migrated database). Policies that depend on these words are decided here, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class TaskStatus(StrEnum):
    """tasks.status (docs/RELIABILITY.md has the life cycle)."""

    # Blocked on the tasks in its `after` (store/dependencies.py); never claimed.
    WAITING = "waiting"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Terminal: only an explicit retry takes a failed task back to the queue."""
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


# Every status not finished: what a cancel ends.
UNFINISHED_TASK_STATUSES = tuple(s for s in TaskStatus if not s.finished)
# A schedule's unfinished runs (its overlap policy looks at them): a run never waits, as
# schedules take no `after` (the partial indexes of migration 002 list exactly these).
UNFINISHED_RUN_STATUSES = tuple(s for s in UNFINISHED_TASK_STATUSES if s != TaskStatus.WAITING)


class AttemptStatus(StrEnum):
    """attempts.status: open while dispatched or running, then ended exactly once."""

    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EndReason(StrEnum):
    """attempts.reason: why a failed or cancelled attempt ended (docs/RELIABILITY.md says who
    decides each one)."""

    EXIT_CODE = "exit_code"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    WORKER_SHUTDOWN = "worker_shutdown"
    SPAWN_FAILED = "spawn_failed"
    WORKER_REFUSED = "worker_refused"
    WORKER_UNREACHABLE = "worker_unreachable"
    DISPATCH_LOST = "dispatch_lost"
    CANCELLED = "cancelled"
    # The task never ran: a task in its `after` failed or was cancelled (it has no attempt).
    DEPENDENCY_FAILED = "dependency_failed"

    @property
    def uses_retry(self) -> bool:
        """Whether a failure for this reason uses up one of the task's retries: the command
        may have had effects. A hand-over that never reached the worker is free (the task is
        queued again after a short pause); a cancelled task, or one ended for its
        dependencies, is not retried at all. A lost attempt uses its lost budget first
        (`budget`), then ordinary retries."""
        return self not in _FREE_OF_RETRY

    @property
    def budget(self) -> RetryBudget:
        """Which budget pays for running the task again after a failure for this reason."""
        if self in _FREE_OF_RETRY:
            return RetryBudget.FREE
        if self in _LOST:
            return RetryBudget.LOST
        return RetryBudget.RETRIES


class RetryBudget(StrEnum):
    """What pays for another attempt (docs/RELIABILITY.md, "Lost work")."""

    # Nothing: the command never ran (the task is queued again after a short pause).
    FREE = "free"
    # One of the task's max_retries: the command failed.
    RETRIES = "retries"
    # One of the task's lost_retries while any are left, then one of its max_retries: the
    # worker was lost or shut down under a running command, which is no fault of the command.
    LOST = "lost"


# lost_retries when a request names none: lost work is not re-run unless asked for, because
# a shell command may have had effects before its worker died (docs/RELIABILITY.md).
DEFAULT_LOST_RETRIES = 0


_LOST = frozenset({EndReason.WORKER_LOST, EndReason.WORKER_SHUTDOWN})
_FREE_OF_RETRY = frozenset(
    {
        EndReason.WORKER_REFUSED,
        EndReason.WORKER_UNREACHABLE,
        EndReason.DISPATCH_LOST,
        EndReason.CANCELLED,
        EndReason.DEPENDENCY_FAILED,
    }
)


class TickOutcome(StrEnum):
    """schedule_ticks.outcome (docs/SCHEDULES.md, "The tick ledger")."""

    STARTED = "started"
    SKIPPED_OVERLAP = "skipped_overlap"
    SKIPPED_PAUSED = "skipped_paused"
    MISSED = "missed"
    CANCELLED_PREVIOUS = "cancelled_previous"

    @property
    def starts_run(self) -> bool:
        """The tick started a run (its ledger row names the task)."""
        return self in (TickOutcome.STARTED, TickOutcome.CANCELLED_PREVIOUS)


class OverlapPolicy(StrEnum):
    """schedules.overlap: what a run does while an earlier run of its schedule is unfinished."""

    ALLOW = "allow"
    SKIP = "skip"
    CANCEL_PREVIOUS = "cancel_previous"


class EventKind(StrEnum):
    """events.kind: what changed (GET /events; store/events.py)."""

    TASK = "task"
    ATTEMPT = "attempt"
    WORKER = "worker"
    TICK = "tick"


def sql_list(words: Iterable[StrEnum]) -> str:
    """Words as an SQL list for `IN`, e.g. ('queued', 'running'): for statements whose word
    sets are decided here (the words are fixed identifiers, never user input)."""
    return "(" + ", ".join(f"'{word.value}'" for word in words) + ")"
