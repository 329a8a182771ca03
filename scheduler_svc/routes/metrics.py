"""Prometheus metrics of the scheduler and of the system as the database sees it."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.metrics import DATABASE_ERRORS
from scheduler_svc import metrics
from scheduler_svc.deps import Pool
from store import stats
from store.db import DB_ERRORS

router = APIRouter()
# Seconds a scrape waits for the database's gauges at most (Prometheus' default timeout: 10).
GAUGES_WITHIN = 2.0


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def prometheus_metrics(pool: Pool) -> Response:
    """Counters of this scheduler, and gauges (queue depth, oldest due age, open attempts,
    workers and their slots) read from the database at each scrape. Without the database the
    counters still answer, the gauges are NaN and skiplock_database_errors_total says why."""
    try:
        async with asyncio.timeout(GAUGES_WITHIN), pool.connection(GAUGES_WITHIN) as conn:
            metrics.set_gauges(await stats.gauges(conn))
    except (*DB_ERRORS, TimeoutError):
        DATABASE_ERRORS.labels("metrics").inc()
        metrics.unknown_gauges()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
