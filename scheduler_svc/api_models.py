"""Pydantic models of the HTTP API: request validation and response shapes, nothing else."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    model_validator,
)

from common.limits import (
    CPU_LIMIT_BOUNDS,
    MAX_COMMAND_BYTES,
    MAX_CWD_BYTES,
    MAX_ENV_VARIABLES,
    MAX_SUCCESS_EXIT_CODES,
    MEMORY_LIMIT_BOUNDS,
    OPEN_FILES_LIMIT_BOUNDS,
    cwd_problem,
    env_problem,
)
from common.output import MAX_OUTPUT_CAP_BYTES
from common.routing import (
    CONCURRENCY_KEY,
    DEFAULT_QUEUE,
    MAX_CONCURRENCY_LIMIT,
    labels_problem,
    queue_problem,
)
from store.dependencies import MAX_AFTER
from store.models import AttemptRow, ScheduleSettings, TaskRow
from store.vocabulary import DEFAULT_LOST_RETRIES

# Nothing is scheduled further ahead than this; a larger value is a mistake, not a plan.
MAX_HORIZON_SECONDS = 10 * 366 * 86400
MAX_TIMEOUT_SECONDS = 31 * 86400


def check_command(value: str) -> str:
    if not value.strip():
        raise ValueError("command must not be empty or blank")
    if "\x00" in value:
        raise ValueError("command must not contain NUL characters")
    if len(value.encode()) > MAX_COMMAND_BYTES:
        raise ValueError(f"command is longer than {MAX_COMMAND_BYTES} bytes")
    return value


# RFC 3339 date-time (section 5.6); the offset is optional here only to say so when it is missing.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?",
    re.ASCII,
)
_RFC3339_HINT = "must be an RFC 3339 timestamp like 2026-01-02T15:04:05Z"


def parse_rfc3339(value: object) -> datetime:
    """An RFC 3339 timestamp with an explicit offset, as an aware UTC datetime."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(_RFC3339_HINT)
    if match["offset"] is None:
        raise ValueError("must include a UTC offset, e.g. Z or +02:00")
    try:
        parsed = datetime.fromisoformat(match.string.upper())
    except ValueError:  # e.g. month 13, or the leap second :60
        raise ValueError(_RFC3339_HINT) from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise ValueError("is out of range once converted to UTC") from None


def check_horizon(value: datetime) -> datetime:
    if value - datetime.now(UTC) > timedelta(seconds=MAX_HORIZON_SECONDS):
        raise ValueError("is more than 10 years in the future")
    return value


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


Command = Annotated[str, AfterValidator(check_command)]
Timestamp = Annotated[datetime, BeforeValidator(parse_rfc3339), AfterValidator(check_horizon)]
Seconds = Annotated[float, Field(ge=0, le=MAX_HORIZON_SECONDS, allow_inf_nan=False)]
# At least a millisecond: the workers count in whole milliseconds, where 0 means no limit.
MIN_TIMEOUT_SECONDS = 0.001
TimeoutSeconds = Annotated[
    float, Field(ge=MIN_TIMEOUT_SECONDS, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False)
]
Retries = Annotated[int, Field(ge=0, le=100)]
Backoff = Annotated[float, Field(ge=0, le=86400, allow_inf_nan=False)]
# Higher first; a waiting task gains a point a minute, so none waits forever.
Priority = Annotated[int, Field(ge=-100, le=100)]


def check_queue(value: str) -> str:
    if problem := queue_problem(value):
        raise ValueError(problem)
    return value


def check_env(value: dict[str, str]) -> dict[str, str]:
    if problem := env_problem(value, "names"):
        raise ValueError(problem)
    return value


def check_labels(value: dict[str, str]) -> dict[str, str]:
    if problem := labels_problem(value):
        raise ValueError(problem)
    return value


def check_cwd(value: str) -> str:
    if problem := cwd_problem(value, "cwd"):
        raise ValueError(problem)
    return value


def check_concurrency_key(value: str) -> str:
    if not CONCURRENCY_KEY.fullmatch(value):
        raise ValueError(
            "must be 1-128 letters, digits, '_', '.', ':', '/' or '-', starting with a letter "
            "or digit"
        )
    return value


ConcurrencyKey = Annotated[str, Field(max_length=128), AfterValidator(check_concurrency_key)]
ConcurrencyLimit = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_LIMIT)]


class ConcurrencySettings(BaseModel):
    """At most concurrency_limit tasks with the same concurrency_key run at once, fleet-wide;
    give both or neither."""

    concurrency_key: ConcurrencyKey | None = None
    concurrency_limit: ConcurrencyLimit | None = None

    @model_validator(mode="after")
    def key_with_limit(self) -> ConcurrencySettings:
        if (self.concurrency_key is None) != (self.concurrency_limit is None):
            raise ValueError("give concurrency_key and concurrency_limit together")
        return self


# The queue a task waits in, and the labels a worker needs to take it (common/routing.py).
Queue = Annotated[str, Field(max_length=64), AfterValidator(check_queue)]
Labels = Annotated[dict[str, str], AfterValidator(check_labels)]
Env = Annotated[
    dict[str, str],
    Field(
        max_length=MAX_ENV_VARIABLES,
        description="variables added to the command's environment: names of letters, digits "
        "and _ (not starting with a digit or SKIPLOCK_), values without NUL, 64 KiB in all",
    ),
    AfterValidator(check_env),
]
Cwd = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CWD_BYTES,
        description="absolute working directory on the worker; the attempt fails with reason "
        "spawn_failed when it does not exist there",
    ),
    AfterValidator(check_cwd),
]
ExitCodes = Annotated[
    list[Annotated[int, Field(ge=0, le=255)]],
    Field(
        min_length=1,
        max_length=MAX_SUCCESS_EXIT_CODES,
        description="exit statuses that count as success",
    ),
]
OutputCap = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_OUTPUT_CAP_BYTES,
        description="bytes of output kept in the database at each end, when lower than the "
        "worker's --output-cap-bytes; 0 keeps none",
    ),
]


MemoryLimit = Annotated[
    int,
    Field(
        ge=MEMORY_LIMIT_BOUNDS[0],
        le=MEMORY_LIMIT_BOUNDS[1],
        description="address space of the command and of each process it starts, in bytes "
        "(a hard limit no descendant can raise); null: the worker's own",
    ),
]
CpuLimit = Annotated[
    int,
    Field(
        ge=CPU_LIMIT_BOUNDS[0],
        le=CPU_LIMIT_BOUNDS[1],
        description="CPU seconds each process of the command may use (SIGXCPU, then SIGKILL); "
        "null: the worker's own",
    ),
]
OpenFilesLimit = Annotated[
    int,
    Field(
        ge=OPEN_FILES_LIMIT_BOUNDS[0],
        le=OPEN_FILES_LIMIT_BOUNDS[1],
        description="open files per process of the command; null: the worker's own",
    ),
]


class ExecutionSettings(BaseModel):
    """How a command runs, for a task and for every run of a schedule."""

    env: Env = Field(default_factory=dict)
    cwd: Cwd | None = None
    success_exit_codes: ExitCodes = Field(default_factory=lambda: [0])
    output_cap_bytes: OutputCap | None = None
    memory_limit_bytes: MemoryLimit | None = None
    cpu_limit_seconds: CpuLimit | None = None
    open_files_limit: OpenFilesLimit | None = None


# Tasks that must succeed before this one starts: ids of existing tasks, or (in POST /tasks/batch
# only) indexes of other tasks of the same batch.
After = Annotated[
    # Not strict: JSON carries a UUID as a string.
    list[Annotated[UUID, Strict(False)] | Annotated[int, Field(ge=0)]],
    Field(
        max_length=MAX_AFTER,
        description=f"up to {MAX_AFTER} tasks that must all succeed before this one starts: "
        "task ids, or in POST /tasks/batch indexes of other items of the batch; when one fails "
        "or is cancelled this task ends failed with reason dependency_failed",
    ),
]


class ScheduleRequest(ExecutionSettings, ConcurrencySettings):
    """POST /schedule. At most one of delay_seconds and scheduled_at; neither means now."""

    model_config = ConfigDict(extra="forbid", strict=True)

    command: Command
    delay_seconds: Seconds | None = None
    scheduled_at: Timestamp | None = None
    timeout_seconds: TimeoutSeconds | None = None
    max_retries: Retries = 0
    # Retries paid for attempts lost with their worker, before ordinary ones (RetryBudget).
    lost_retries: Retries = DEFAULT_LOST_RETRIES
    retry_backoff_seconds: Backoff = 1.0
    priority: Priority = 0
    queue: Queue = DEFAULT_QUEUE
    labels: Labels = Field(default_factory=dict)
    after: After = Field(default_factory=list)

    @model_validator(mode="after")
    def one_start(self) -> ScheduleRequest:
        if self.delay_seconds is not None and self.scheduled_at is not None:
            raise ValueError("give either delay_seconds or scheduled_at, not both")
        return self


IDEMPOTENCY_KEY_MAX = 255
MAX_BATCH_TASKS = 10_000
IdempotencyKey = Annotated[
    str, Field(min_length=1, max_length=IDEMPOTENCY_KEY_MAX, pattern=r"^[\x20-\x7e]+$")
]


class BatchTask(ScheduleRequest):
    """One task of POST /tasks/batch: every field of POST /schedule, and the idempotency key
    the Idempotency-Key header gives a single task."""

    idempotency_key: IdempotencyKey | None = None


class BatchRequest(BaseModel):
    """POST /tasks/batch: tasks written all together, or (on any problem) none of them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tasks: Annotated[list[BatchTask], Field(min_length=1, max_length=MAX_BATCH_TASKS)]


class BatchAnswer(BaseModel):
    """The id of every task of the batch, in the order given, and how many are new (the others
    are tasks that earlier requests made under the same idempotency keys)."""

    task_ids: list[UUID]
    created: int


def task_status_view(task: TaskRow) -> dict[str, Any]:
    """The /status shape: stable since the first release."""
    return {
        "task_id": str(task.id),
        "command": task.command,
        "status": task.status,
        "scheduled_at": rfc3339(task.scheduled_at),
        "picked_at": rfc3339(task.picked_at),
        "started_at": rfc3339(task.started_at),
        "completed_at": rfc3339(task.completed_at),
        "failed_at": rfc3339(task.failed_at),
        "cancelled_at": rfc3339(task.cancelled_at),
        "exit_code": task.exit_code,
        "worker_id": task.worker_id,
        "output_path": task.output_path,
        "attempt": task.attempt,
        "last_reason": task.last_reason,
    }


def attempt_view(attempt: AttemptRow) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "worker_id": attempt.worker_id,
        "status": attempt.status,
        "reason": attempt.reason,
        "picked_at": rfc3339(attempt.picked_at),
        "started_at": rfc3339(attempt.started_at),
        "ended_at": rfc3339(attempt.ended_at),
        "exit_code": attempt.exit_code,
        "output_path": attempt.output_path,
        "detail": attempt.detail,
        "cancel_requested_at": rfc3339(attempt.cancel_requested_at),
    }


def task_detail_view(task: TaskRow, attempts: list[AttemptRow]) -> dict[str, Any]:
    """GET /tasks/{id}: the status fields plus retry settings and every attempt."""
    return {
        **task_status_view(task),
        "created_at": rfc3339(task.created_at),
        "run_at": rfc3339(task.run_at),
        "max_retries": task.max_retries,
        "retries_left": max(task.max_retries - task.failures, 0),
        "lost_retries": task.lost_retries,
        "lost_retries_left": max(task.lost_retries - task.losses, 0),
        "concurrency_key": task.concurrency_key,
        "concurrency_limit": task.concurrency_limit,
        "retry_backoff_seconds": task.retry_backoff_seconds,
        "timeout_seconds": task.timeout_seconds,
        "priority": task.priority,
        "queue": task.queue,
        "labels": task.labels,
        **execution_view(task),
        "attempts": [attempt_view(a) for a in attempts],
    }


def waiting_on_dependencies(task: TaskRow, after: list[UUID]) -> str | None:
    """What a waiting task waits for, e.g. '2 of 3 tasks in after have not succeeded'."""
    if task.status != "waiting":
        return None
    return f"{task.unmet_dependencies} of {len(after)} tasks in after have not succeeded"


# Query values that are compared with text in the database, which cannot hold NUL.
def check_no_nul_query(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


TextQuery = Annotated[str, AfterValidator(check_no_nul_query)]
# A point in time given in a query: RFC 3339 with an offset, any year.
QueryTime = Annotated[datetime, BeforeValidator(parse_rfc3339)]


class TaskStatusView(BaseModel):
    """A task as POST /schedule, GET /status and listings answer it."""

    # Fields added by newer servers pass through to clients that know them.
    model_config = ConfigDict(extra="allow")

    task_id: str = Field(description="UUID")
    command: str
    status: str = Field(
        description="waiting, queued, dispatched, running, succeeded, failed, cancelled"
    )
    scheduled_at: str | None = Field(description="RFC 3339, UTC")
    picked_at: str | None
    started_at: str | None
    completed_at: str | None = Field(description="when it finished, however it did")
    failed_at: str | None
    cancelled_at: str | None
    exit_code: int | None
    worker_id: str | None
    output_path: str | None
    attempt: int = Field(description="number of the latest attempt; 0 before the first")
    last_reason: str | None


class AttemptView(BaseModel):
    model_config = ConfigDict(extra="allow")

    attempt: int
    worker_id: str
    status: str
    reason: str | None
    picked_at: str | None
    started_at: str | None
    ended_at: str | None
    exit_code: int | None
    output_path: str | None
    detail: str | None
    cancel_requested_at: str | None


class TaskDetailView(TaskStatusView):
    created_at: str | None
    run_at: str | None = Field(description="earliest start of the next attempt")
    max_retries: int
    retries_left: int
    lost_retries: int = Field(
        description="retries for attempts lost with their worker, used before max_retries"
    )
    lost_retries_left: int
    concurrency_key: str | None = Field(
        default=None, description="at most concurrency_limit tasks with this key run at once"
    )
    concurrency_limit: int | None = None
    retry_backoff_seconds: float
    timeout_seconds: float | None
    priority: int = Field(description="-100..100, higher first; +1 per minute waited")
    queue: str
    labels: dict[str, str] = Field(description="labels a worker needs to take the task")
    env: dict[str, str] = Field(description="variables added to the command's environment")
    cwd: str | None = Field(description="working directory; null: the worker's own")
    success_exit_codes: list[int] = Field(description="exit statuses that count as success")
    output_cap_bytes: int | None = Field(
        description="bytes of output kept at each end; null: the worker's --output-cap-bytes"
    )
    memory_limit_bytes: int | None = Field(description="hard address-space limit, bytes")
    cpu_limit_seconds: int | None = Field(description="hard CPU-time limit per process")
    open_files_limit: int | None = Field(description="hard open-files limit per process")
    waiting_for: str | None = Field(
        default=None,
        description="why a waiting task, or a due queued one, is not running yet, when known",
    )
    after: list[str] = Field(
        default_factory=list, description="ids of the tasks that must succeed before this one"
    )
    attempts: list[AttemptView]


class TaskList(BaseModel):
    tasks: list[TaskStatusView]
    next_cursor: str | None = Field(
        default=None, description="pass back as `cursor` for the next page; null on the last"
    )
def execution_view(row: TaskRow | ScheduleSettings) -> dict[str, Any]:
    """The execution settings of a task or a schedule, as GET answers them."""
    return {
        "env": row.env,
        "cwd": row.cwd,
        "success_exit_codes": row.success_exit_codes,
        "output_cap_bytes": row.output_cap_bytes,
        "memory_limit_bytes": row.memory_limit_bytes,
        "cpu_limit_seconds": row.cpu_limit_seconds,
        "open_files_limit": row.open_files_limit,
    }
