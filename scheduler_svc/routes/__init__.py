"""The HTTP API, one router module per resource; `ROUTERS` is what the app includes."""

from __future__ import annotations

from scheduler_svc import auth
from scheduler_svc.routes import (
    dashboard,
    events,
    health,
    metrics,
    output,
    queues,
    schedules,
    stats,
    tasks,
    workers,
)

ROUTERS = (
    tasks.router,
    output.router,
    schedules.router,
    queues.router,
    workers.router,
    stats.router,
    metrics.router,
    events.router,
    health.router,
    dashboard.router,
    auth.router,
)
