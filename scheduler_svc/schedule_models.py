"""Pydantic models and response shapes of the schedule API (the HTTP edge only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator

from common.cronspec import load_zone
from common.routing import DEFAULT_QUEUE
from scheduler_svc.api_models import (
    Backoff,
    Command,
    ConcurrencyKey,
    ConcurrencyLimit,
    ConcurrencySettings,
    CpuLimit,
    Cwd,
    Env,
    ExecutionSettings,
    ExitCodes,
    Labels,
    MemoryLimit,
    OpenFilesLimit,
    OutputCap,
    Priority,
    Queue,
    Retries,
    TaskStatusView,
    TimeoutSeconds,
    execution_view,
    rfc3339,
)
from store.models import ScheduleRow, TickRow
from store.vocabulary import DEFAULT_LOST_RETRIES, OverlapPolicy

MAX_NAME_CHARS = 200
MAX_CRON_CHARS = 200
MAX_CATCHUP_WINDOW_SECONDS = 366 * 86400
MAX_JITTER_SECONDS = 86400


def check_name(value: str) -> str:
    if not value.strip():
        raise ValueError("name must not be empty or blank")
    if not value.isprintable():
        raise ValueError("name must not contain control characters")
    return value


def check_no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; say so instead of failing in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def check_timezone(value: str) -> str:
    load_zone(value)  # a CronError (a ValueError) names an unknown zone
    return value


Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(check_name)]
# Query parameters compared with names (a prefix, or the name a page ends at).
NameQuery = Annotated[str, AfterValidator(check_no_nul)]
Cron = Annotated[str, Field(min_length=1, max_length=MAX_CRON_CHARS)]
Timezone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_timezone)]
# Not strict: JSON carries the policy as a string.
Overlap = Annotated[OverlapPolicy, Strict(False)]
CatchupWindow = Annotated[int, Field(ge=1, le=MAX_CATCHUP_WINDOW_SECONDS)]
Jitter = Annotated[float, Field(ge=0, le=MAX_JITTER_SECONDS, allow_inf_nan=False)]


def no_after(data: Any) -> Any:
    """A clear word for `after` on a schedule (instead of "extra inputs are not permitted")."""
    if isinstance(data, dict) and "after" in data:
        raise ValueError(
            "schedules take no `after`: only one-off tasks (POST /schedule, POST /tasks/batch) "
            "wait for other tasks"
        )
    return data


class ScheduleCreate(ExecutionSettings, ConcurrencySettings):
    """POST /schedules; the execution settings apply to every run."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    cron: Cron
    command: Command
    timezone: Timezone = "UTC"
    overlap: Overlap = OverlapPolicy.SKIP
    catchup_window_seconds: CatchupWindow = 60
    timeout_seconds: TimeoutSeconds | None = None
    max_retries: Retries = 0
    lost_retries: Retries = DEFAULT_LOST_RETRIES
    retry_backoff_seconds: Backoff = 1.0
    paused: bool = False
    jitter_seconds: Jitter = 0.0
    priority: Priority = 0
    queue: Queue = DEFAULT_QUEUE
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def refuse_after(cls, data: Any) -> Any:
        return no_after(data)


# Fields a PATCH may set to null: null removes the setting.
NULLABLE = frozenset(
    {
        "timeout_seconds",
        "cwd",
        "output_cap_bytes",
        "memory_limit_bytes",
        "cpu_limit_seconds",
        "open_files_limit",
        "concurrency_key",
        "concurrency_limit",
    }
)


class SchedulePatch(BaseModel):
    """PATCH /schedules/{id}: the fields given replace the current ones."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def refuse_after(cls, data: Any) -> Any:
        return no_after(data)

    name: Name | None = None
    cron: Cron | None = None
    command: Command | None = None
    timezone: Timezone | None = None
    overlap: Overlap | None = None
    catchup_window_seconds: CatchupWindow | None = None
    timeout_seconds: TimeoutSeconds | None = None  # null removes the timeout
    max_retries: Retries | None = None
    lost_retries: Retries | None = None
    # Both or neither; both null removes the limit.
    concurrency_key: ConcurrencyKey | None = None
    concurrency_limit: ConcurrencyLimit | None = None
    retry_backoff_seconds: Backoff | None = None
    paused: bool | None = None
    jitter_seconds: Jitter | None = None
    priority: Priority | None = None
    queue: Queue | None = None
    labels: Labels | None = None
    env: Env | None = None
    cwd: Cwd | None = None  # null: the worker's working directory
    success_exit_codes: ExitCodes | None = None
    output_cap_bytes: OutputCap | None = None  # null: the worker's cap
    memory_limit_bytes: MemoryLimit | None = None  # null: the worker's own limits
    cpu_limit_seconds: CpuLimit | None = None
    open_files_limit: OpenFilesLimit | None = None

    def null_fields(self) -> list[str]:
        """Fields sent as null that cannot be null."""
        return sorted(
            name
            for name in self.model_fields_set
            if getattr(self, name) is None and name not in NULLABLE
        )


def fire_time_view(fire: datetime, timezone: str) -> dict[str, str | None]:
    """A fire time in UTC and in the schedule's zone (RFC 3339 with the local offset)."""
    return {"utc": rfc3339(fire), "local": fire.astimezone(ZoneInfo(timezone)).isoformat()}


def schedule_view(row: ScheduleRow, upcoming: list[datetime]) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "cron": row.cron,
        "timezone": row.timezone,
        "command": row.command,
        "overlap": row.overlap,
        "catchup_window_seconds": row.catchup_window_seconds,
        "timeout_seconds": row.timeout_seconds,
        "max_retries": row.max_retries,
        "lost_retries": row.lost_retries,
        "concurrency_key": row.concurrency_key,
        "concurrency_limit": row.concurrency_limit,
        "retry_backoff_seconds": row.retry_backoff_seconds,
        "paused": row.paused,
        "jitter_seconds": row.jitter_seconds,
        "priority": row.priority,
        "queue": row.queue,
        "labels": row.labels,
        **execution_view(row),
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
        "active_from": rfc3339(row.active_from),
        "next_fire_times": [fire_time_view(f, row.timezone) for f in upcoming],
    }


def tick_view(tick: TickRow, timezone: str) -> dict[str, Any]:
    return {
        "fire_time": rfc3339(tick.fire_time),
        "fire_time_local": fire_time_view(tick.fire_time, timezone)["local"],
        "outcome": tick.outcome,
        "task_id": None if tick.task_id is None else str(tick.task_id),
        "task_status": tick.task_status,
        "recorded_at": rfc3339(tick.recorded_at),
    }


# --- answers ----------------------------------------------------------------------------------
# Fields added by newer servers pass through (extra="allow") to clients that know them.


class FireTimeView(BaseModel):
    model_config = ConfigDict(extra="allow")

    utc: str = Field(description="RFC 3339, UTC")
    local: str = Field(description="RFC 3339 with the schedule's local offset")


class ScheduleView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="UUID")
    name: str
    cron: str
    timezone: str
    command: str
    overlap: str = Field(description="allow, skip or cancel_previous")
    catchup_window_seconds: int
    timeout_seconds: float | None
    max_retries: int
    lost_retries: int = Field(default=0, description="retries of runs lost with their worker")
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    retry_backoff_seconds: float
    paused: bool
    jitter_seconds: float
    priority: int = Field(default=0, description="the priority of its runs")
    queue: str = Field(default=DEFAULT_QUEUE, description="the queue its runs wait in")
    labels: dict[str, str] = Field(
        default_factory=dict, description="labels the worker of each run needs"
    )
    created_at: str
    updated_at: str
    active_from: str = Field(description="ticks before this instant never run")
    next_fire_times: list[FireTimeView]


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]
    next_cursor: str | None = Field(description="pass back as `cursor`; null on the last page")


class ExpressionPreview(BaseModel):
    cron: str
    timezone: str
    fire_times: list[FireTimeView]


class SchedulePreview(BaseModel):
    id: str
    timezone: str
    fire_times: list[FireTimeView]


class TickView(BaseModel):
    model_config = ConfigDict(extra="allow")

    fire_time: str
    fire_time_local: str
    outcome: str = Field(
        description="started, skipped_overlap, skipped_paused, missed or cancelled_previous"
    )
    task_id: str | None
    task_status: str | None
    recorded_at: str


class TickList(BaseModel):
    ticks: list[TickView]
    next_cursor: str | None = Field(description="pass back as `cursor` for older ticks")


class TriggeredRun(BaseModel):
    task: TaskStatusView
    cancelled_task_ids: list[str] = Field(
        description="unfinished runs cancelled first (overlap cancel_previous)"
    )
