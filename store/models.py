"""Row dataclasses: what the store hands to services. Field names match column names."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from uuid import UUID

from common.routing import DEFAULT_QUEUE
from store.vocabulary import DEFAULT_LOST_RETRIES, AttemptStatus, EndReason


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a run is routed and executed: a task's own, or a schedule's for every run it
    starts (the same columns on `tasks` and `schedules`)."""

    # -100..100, higher first; a waiting task gains a point a minute (migration 008)
    priority: int = 0
    # the queue it waits in, and the labels a worker needs to take it (migration 010)
    queue: str = DEFAULT_QUEUE
    labels: dict[str, str] = field(default_factory=dict)
    # How the command runs (migration 011).
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    success_exit_codes: list[int] = field(default_factory=lambda: [0])
    output_cap_bytes: int | None = None
    # Retries paid for lost work before ordinary ones (migration 012).
    lost_retries: int = DEFAULT_LOST_RETRIES
    # hard rlimits of the command and its descendants (migration 013); None: the worker's own
    memory_limit_bytes: int | None = None
    cpu_limit_seconds: int | None = None
    open_files_limit: int | None = None
    # At most concurrency_limit tasks with this key run at once (migration 014).
    concurrency_key: str | None = None
    concurrency_limit: int | None = None


@dataclass(frozen=True)
class TaskRow(RunSettings):
    id: UUID
    command: str
    status: str
    created_at: datetime
    scheduled_at: datetime
    run_at: datetime
    attempt: int
    failures: int
    max_retries: int
    retry_backoff_seconds: float
    timeout_seconds: float | None
    worker_id: str | None
    picked_at: datetime | None
    started_at: datetime | None
    exit_code: int | None
    output_path: str | None
    completed_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None
    last_reason: str | None
    idempotency_key: str | None
    request_hash: str | None
    # Runs of cron schedules: the schedule, the tick (NULL for a manual trigger) and whether
    # the schedule's overlap policy allows no other unfinished run beside this one.
    schedule_id: UUID | None = None
    fire_time: datetime | None = None
    exclusive_run: bool = False
    # how many of its lost_retries were used (migration 012)
    losses: int = 0
    # tasks in its `after` that have not succeeded (migration 015)
    unmet_dependencies: int = 0


@dataclass(frozen=True)
class AttemptRow:
    task_id: UUID
    attempt: int
    worker_id: str
    status: str
    reason: str | None
    picked_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    output_path: str | None
    detail: str | None
    cancel_requested_at: datetime | None
    cancel_sent_at: datetime | None


@dataclass(frozen=True)
class NewTask(RunSettings):
    command: str
    # Exactly one of these two decides scheduled_at; both None means now (database clock).
    scheduled_at: datetime | None
    delay_seconds: float | None
    max_retries: int = 0
    retry_backoff_seconds: float = 1.0
    timeout_seconds: float | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True)
class ClaimedAttempt:
    task_id: UUID
    attempt: int
    command: str
    timeout_seconds: float | None
    run_at: datetime
    worker_id: str
    address: str
    schedule_id: UUID | None
    # variables added to the base environment; the working directory (None: the worker's);
    # exit statuses that count as success; output cap (None: the worker's)
    env: dict[str, str]
    cwd: str | None
    success_exit_codes: list[int]
    output_cap_bytes: int | None
    memory_limit_bytes: int | None
    cpu_limit_seconds: int | None
    open_files_limit: int | None


CLAIMED_FIELDS = tuple(f.name for f in fields(ClaimedAttempt))


@dataclass(frozen=True)
class Claim:
    """What one claim did: the attempts it opened, the slots it offered, and how long until the
    next queued task falls due (None when none is queued for later)."""

    attempts: list[ClaimedAttempt]
    free: int
    next_due_in: float | None
    # Some class of workers found as many due tasks as it had free slots: more may be due.
    more: bool = False


@dataclass(frozen=True)
class AttemptKey:
    task_id: UUID
    attempt: int


@dataclass(frozen=True)
class AttemptStart:
    """A worker's report that it spawned an attempt's command."""

    task_id: UUID
    attempt: int
    worker_id: str
    started_at: datetime
    output_path: str


@dataclass(frozen=True)
class StartedAttempt:
    """An attempt a start report was recorded for: `keep` says whether its worker should keep
    running it, `first` whether this report was the one that started it (not a repeat)."""

    task_id: UUID
    attempt: int
    worker_id: str
    schedule_id: UUID | None
    run_at: datetime
    started_at: datetime
    keep: bool
    first: bool

    @property
    def key(self) -> AttemptKey:
        return AttemptKey(self.task_id, self.attempt)

    @property
    def start_delay(self) -> float:
        """Seconds from when the attempt was due to when its command started."""
        return max((self.started_at - self.run_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class StopRequest:
    task_id: UUID
    attempt: int
    worker_id: str
    address: str


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt ended, as reported by its worker or decided by a coordinator."""

    task_id: UUID
    attempt: int
    status: AttemptStatus  # succeeded | failed | cancelled
    reason: EndReason | None  # None only for succeeded (whether it uses a retry is its own)
    # Only reports from this worker count; None for endings decided by a coordinator.
    worker_id: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    # When the worker saw it end (its clock); None: when recorded (the database's clock).
    finished_at: datetime | None = None
    output_path: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class EndedAttempt:
    """An attempt that an ending closed, and where its task went (None: it did not move)."""

    task_id: UUID
    attempt: int
    worker_id: str
    schedule_id: UUID | None
    status: str
    reason: str | None
    exit_code: int | None
    started_at: datetime | None
    ended_at: datetime
    task_status: str | None
    run_at: datetime
    # True when its start was only learnt from this ending (no start report came before)
    start_unrecorded: bool

    def as_started(self) -> StartedAttempt | None:
        """The start this ending revealed, when no start report had been recorded."""
        if not self.start_unrecorded or self.started_at is None:
            return None
        return StartedAttempt(
            self.task_id,
            self.attempt,
            self.worker_id,
            self.schedule_id,
            self.run_at,
            self.started_at,
            keep=False,
            first=True,
        )

    @property
    def duration(self) -> float | None:
        """Seconds the command ran; None when it never started."""
        if self.started_at is None:
            return None
        return max((self.ended_at - self.started_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class OutputDelta:
    """New bytes of an attempt's output from its worker (proto OutputDelta has the rules)."""

    task_id: UUID
    attempt: int
    worker_id: str
    head_offset: int
    head: bytes
    tail_offset: int
    tail: bytes
    size: int
    cap: int


@dataclass(frozen=True)
class AttemptOutput:
    """An attempt and its stored output: `head`, then `tail_offset - len(head)` bytes omitted,
    then `tail`, `size` bytes in all. `attempt` is None when the task has no such attempt
    (`latest` 0: it was never dispatched); `head` and `tail` are None when left out."""

    latest: int
    attempt: int | None
    ended: bool
    size: int
    tail_offset: int
    head: bytes | None
    tail: bytes | None


# --- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSettings(RunSettings):
    """What a user sets on a schedule (POST, or PATCH merged over the current row), with the
    run settings of every run it starts."""

    name: str
    cron: str
    timezone: str
    command: str
    overlap: str
    catchup_window_seconds: int
    timeout_seconds: float | None
    max_retries: int
    retry_backoff_seconds: float
    paused: bool
    jitter_seconds: float


@dataclass(frozen=True, kw_only=True)
class ScheduleRow(ScheduleSettings):
    id: UUID
    created_at: datetime
    updated_at: datetime
    anchor_at: datetime
    active_from: datetime
    next_fire_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class DueSchedule:
    """A schedule claimed by the cron loop, with the instant that counts as now for it."""

    id: UUID
    cron: str
    timezone: str
    overlap: str
    paused: bool
    catchup_window_seconds: int
    anchor_at: datetime
    active_from: datetime
    next_fire_at: datetime
    now: datetime


@dataclass(frozen=True)
class TickRow:
    schedule_id: UUID
    fire_time: datetime
    outcome: str
    task_id: UUID | None
    recorded_at: datetime
    task_status: str | None  # the run's current status, for started and cancelled_previous


@dataclass(frozen=True)
class ScheduleRun:
    """An unfinished run of a schedule."""

    schedule_id: UUID
    task_id: UUID


# --- fleet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRow:
    """A worker as registered by its heartbeats; `busy` counts its open attempts."""

    id: str
    address: str
    slots: int
    busy: int
    draining: bool
    first_seen_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_seconds: float
    lost_at: datetime | None


@dataclass(frozen=True)
class WorkerAttempt:
    """An attempt a worker holds open, with its task's command."""

    task_id: UUID
    attempt: int
    status: str
    picked_at: datetime
    started_at: datetime | None
    command: str
    schedule_id: UUID | None


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks a listing shows: each field given narrows it; times are half-open ranges
    [after, before)."""

    statuses: tuple[str, ...] = ()
    worker_id: str | None = None
    schedule_id: UUID | None = None
    queue: str | None = None
    command_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    scheduled_after: datetime | None = None
    scheduled_before: datetime | None = None
    finished_after: datetime | None = None
    finished_before: datetime | None = None


@dataclass(frozen=True)
class PageKey:
    """Where a page newest first ended: its last task's creation time and id."""

    created_at: datetime
    id: UUID
