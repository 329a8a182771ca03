"""Typed answers of the read-only views (workers, stats): what the OpenAPI document promises
and a generated client gets. Times are RFC 3339 in UTC; ages and delays are seconds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from store.models import WorkerAttempt, WorkerRow


def in_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# An instant, answered in UTC with a Z suffix.
Instant = Annotated[datetime, AfterValidator(in_utc)]


class Worker(BaseModel):
    id: str
    address: str = Field(description="host:port coordinators dial")
    slots: int = Field(description="commands it runs at once at most")
    busy: int = Field(description="attempts handed to it and not yet ended")
    draining: bool = Field(description="shutting down: takes no new work")
    lost: bool = Field(
        description="declared lost by a coordinator (silent for longer than the coordinators' "
        "lost-after interval); takes no work until it heartbeats again"
    )
    lost_at: Instant | None
    last_heartbeat_at: Instant
    heartbeat_age_seconds: float = Field(description="by the database clock")
    registered_at: Instant = Field(description="first heartbeat ever seen from this id")

    @classmethod
    def of(cls, row: WorkerRow) -> Worker:
        return cls(
            id=row.id,
            address=row.address,
            slots=row.slots,
            busy=row.busy,
            draining=row.draining,
            lost=row.lost_at is not None,
            lost_at=row.lost_at,
            last_heartbeat_at=row.last_heartbeat_at,
            heartbeat_age_seconds=row.heartbeat_age_seconds,
            registered_at=row.first_seen_at,
        )


class WorkerList(BaseModel):
    workers: list[Worker]


class HeldAttempt(BaseModel):
    task_id: uuid.UUID
    attempt: int
    status: str = Field(description="dispatched or running")
    command: str
    schedule_id: uuid.UUID | None
    picked_at: Instant
    started_at: Instant | None

    @classmethod
    def of(cls, row: WorkerAttempt) -> HeldAttempt:
        return cls(
            task_id=row.task_id,
            attempt=row.attempt,
            status=row.status,
            command=row.command,
            schedule_id=row.schedule_id,
            picked_at=row.picked_at,
            started_at=row.started_at,
        )


class WorkerDetail(Worker):
    attempts: list[HeldAttempt] = Field(description="attempts it holds open, oldest first")


class TaskCounts(BaseModel):
    """Tasks not finished, counted exactly."""

    queued_due: int = Field(description="queued and due now: the backlog")
    queued_later: int = Field(description="queued for a later time")
    queued_unserved: int = Field(
        default=0,
        description="of queued_due, those no live worker can take now (their queue is paused, "
        "or no worker serves it with their labels); GET /queues and GET /tasks/{id} say why",
    )
    dispatched: int = Field(description="handed to a worker, not started yet")
    running: int
    waiting: int = Field(
        default=0,
        description="waiting for the tasks in their after to succeed: not backlog, not due",
    )


class FinishedCounts(BaseModel):
    """Tasks that finished within the last `minutes` minutes, by how."""

    minutes: int
    succeeded: int
    failed: int
    cancelled: int


class StartDelay(BaseModel):
    """Seconds from when an attempt could start (scheduled_at; a retry's own time) to when its
    worker started it, over tasks finished in the last `minutes` minutes; null without any."""

    minutes: int
    samples: int
    p50: float | None
    p95: float | None
    p99: float | None


class FleetCounts(BaseModel):
    workers: int = Field(description="workers ever registered, lost ones included")
    lost: int
    draining: int
    slots: int = Field(description="slots of the workers not lost")
    busy: int = Field(description="of those, taken by open attempts")


class TickCounts(BaseModel):
    """Cron ticks decided in the last `minutes` minutes, by outcome."""

    minutes: int
    started: int
    skipped_overlap: int
    skipped_paused: int
    missed: int
    cancelled_previous: int


class Stats(BaseModel):
    at: Instant = Field(description="the database clock when these were read")
    tasks: TaskCounts
    oldest_due_age_seconds: float | None = Field(
        description="how long the oldest due task has waited; null when nothing is due"
    )
    finished: list[FinishedCounts] = Field(description="over the last 1, 5, 15 and 60 minutes")
    start_delay: StartDelay
    fleet: FleetCounts
    ticks: TickCounts
    tasks_estimate: int = Field(
        description="all tasks, finished ones included: the planner's estimate (-1 before the "
        "table was first analysed)"
    )


class MinuteActivity(BaseModel):
    minute: Instant = Field(description="start of the minute (UTC)")
    submitted: int
    succeeded: int
    failed: int
    cancelled: int
    start_delay_p50: float | None = Field(description="seconds, of the tasks finished then")
    start_delay_p99: float | None


class StatsHistory(BaseModel):
    minutes: list[MinuteActivity] = Field(description="oldest first, the current minute last")
