"""The scheduler's Prometheus metrics: what it counts itself, and gauges of the whole system read
from the database at each scrape (so every replica reports the same values)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

SUBMITTED = Counter("skiplock_tasks_submitted", "Tasks accepted over the HTTP API")
QUEUED = Gauge("skiplock_queue_tasks", "Queued tasks, due now or later")
WAITING = Gauge(
    "skiplock_tasks_waiting", "Tasks waiting for the tasks in their after (not in the queue)"
)
DUE = Gauge("skiplock_queue_due_tasks", "Queued tasks that are due now (the backlog)")
OLDEST_DUE_AGE = Gauge(
    "skiplock_queue_oldest_due_age_seconds", "How long the oldest due task has waited (0: none)"
)
OPEN_ATTEMPTS = Gauge(
    "skiplock_attempts_open", "Attempts handed to workers and not ended, by status", ["status"]
)
WORKERS = Gauge(
    "skiplock_workers", "Workers known to the database, by state (live, lost, draining)", ["state"]
)
SLOTS = Gauge("skiplock_worker_slots_total", "Slots of the live workers")
SLOTS_BUSY = Gauge("skiplock_worker_slots_busy_total", "Slots of the live workers holding attempts")


def set_gauges(row: dict[str, Any]) -> None:
    """Set the database gauges from one row of store.stats.gauges."""
    QUEUED.set(row["queued"])
    WAITING.set(row["waiting"])
    DUE.set(row["due"])
    OLDEST_DUE_AGE.set(row["oldest_due_age"])
    for status in ("dispatched", "running"):
        OPEN_ATTEMPTS.labels(status).set(row[status])
    for state in ("live", "lost", "draining"):
        WORKERS.labels(state).set(row[state])
    SLOTS.set(row["slots"])
    SLOTS_BUSY.set(row["busy"])


def unknown_gauges() -> None:
    """The database could not be read: NaN, never a stale figure."""
    nan = float("nan")
    set_gauges(
        {
            key: nan
            for key in (
                "queued",
                "waiting",
                "due",
                "oldest_due_age",
                "dispatched",
                "running",
                "live",
                "lost",
                "draining",
                "slots",
                "busy",
            )
        }
    )
