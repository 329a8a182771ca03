"""Prometheus metrics of the scheduler and of the system as the database sees it."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from scheduler_svc import metrics
from scheduler_svc.deps import Pool
from store import stats

router = APIRouter()


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
    workers and their slots) read from the database at each scrape."""
    async with pool.connection() as conn:
        metrics.set_gauges(await stats.gauges(conn))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
