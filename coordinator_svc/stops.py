"""Delivering cancellations: telling workers to stop attempts whose task was cancelled."""

from __future__ import annotations

import asyncio

import grpc
from psycopg_pool import AsyncConnectionPool

from common.logs import get_logger
from common.loops import wait_any
from common.metrics import DATABASE_ERRORS
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.wakeups import Wakeups
from coordinator_svc.worker_stubs import WorkerStubs
from proto import skiplock_pb2 as pb
from store import dispatch
from store.db import DB_ERRORS, in_transaction
from store.models import StopRequest

log = get_logger(__name__)

# A stop not yet acknowledged by its attempt's end is sent again after this many seconds.
RESEND_AFTER = 5.0
# Stops taken per pass.
BATCH = 100


async def stop_loop(
    pool: AsyncConnectionPool,
    config: CoordinatorConfig,
    wakeups: Wakeups,
    stubs: WorkerStubs,
    stop: asyncio.Event,
) -> None:
    """Tell workers to stop attempts whose task was cancelled (re-sent until they end)."""
    while not stop.is_set():
        wakeups.stops.clear()
        try:
            # One statement: no transaction around it.
            requests = await in_transaction(
                pool,
                lambda conn: dispatch.take_pending_stops(conn, RESEND_AFTER, BATCH),
                atomic=False,
            )
        except DB_ERRORS as exc:
            DATABASE_ERRORS.labels("stops").inc()
            log.warning("could not read pending cancellations (%s)", exc)
            requests = []
        await asyncio.gather(*(send_stop(config, stubs, r) for r in requests))
        await wait_any([stop, wakeups.stops], config.poll_interval)


async def send_stop(config: CoordinatorConfig, stubs: WorkerStubs, request: StopRequest) -> None:
    message = pb.CancelTaskRequest(
        ref=pb.AttemptRef(task_id=str(request.task_id), attempt=request.attempt)
    )
    try:
        await stubs.get(request.address).CancelTask(
            message, timeout=config.submit_timeout, metadata=stubs.metadata
        )
    except grpc.aio.AioRpcError as exc:
        # Re-sent later; a worker that stays unreachable is declared lost instead.
        log.info(
            "cancel not delivered; sent again later",
            task_id=str(request.task_id),
            attempt=request.attempt,
            worker_id=request.worker_id,
            code=exc.code().name,
        )
