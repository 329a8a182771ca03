"""The coordinator's gRPC service and its lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from typing import Any

import grpc
import psycopg
from psycopg_pool import AsyncConnectionPool

from common import grpc_security
from common.loops import supervise
from common.metrics import DATABASE_ERRORS, serve_metrics
from common.ready import write_ready_file
from common.streams import StreamEnds
from coordinator_svc import transitions
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.cron import cron_loop
from coordinator_svc.dispatcher import Dispatcher
from coordinator_svc.pruning import event_pruning_loop
from coordinator_svc.recovery import reaper_loop
from coordinator_svc.reports import record_heartbeat, record_reports
from coordinator_svc.retention import retention_loop
from coordinator_svc.stops import stop_loop
from coordinator_svc.wakeups import Wakeups, listen_loop
from coordinator_svc.worker_stubs import WorkerStubs
from proto import checks
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from store.db import DB_ERRORS, in_transaction, make_pool
from store.migrate import migrate_until_done
from store.vocabulary import TaskStatus

log = logging.getLogger(__name__)


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, pool: AsyncConnectionPool, config: CoordinatorConfig, wakeups: Wakeups):
        self.pool = pool
        self.config = config
        self.wakeups = wakeups
        self.streams = StreamEnds()

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        problem = checks.heartbeat_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        await refuse_impersonation(context, [request.worker_id])

        async def work(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await record_heartbeat(conn, request, self.config.handover_grace)

        try:
            # Not atomic: every statement stands on its own (the endings are fenced), and the
            # worker's row is not held locked from claims while the rest runs.
            outcome = await in_transaction(self.pool, work, atomic=False)
        except DB_ERRORS as exc:
            DATABASE_ERRORS.labels("heartbeat").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        transitions.ended(outcome.recovered)
        if request.free_slots > 0 or outcome.recovered:
            self.wakeups.dispatch.set()
        return pb.HeartbeatResponse(
            revoked=[
                pb.AttemptRef(task_id=str(k.task_id), attempt=k.attempt) for k in outcome.revoked
            ],
            heartbeat_interval_ms=round(self.config.heartbeat_interval * 1000),
        )

    async def ReportStatus(
        self, request: pb.ReportStatusRequest, context: Any
    ) -> pb.ReportStatusResponse:
        return await self.report(request, context)

    async def ReportStream(
        self, requests: AsyncIterator[pb.ReportStatusRequest], context: Any
    ) -> AsyncIterator[pb.ReportStatusResponse]:
        async for request in self.streams.requests(requests):
            yield await self.report(request, context)

    async def report(
        self, request: pb.ReportStatusRequest, context: Any
    ) -> pb.ReportStatusResponse:
        """One batch of reports, from either call: an error aborts the call or stream."""
        problem = checks.report_status_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        senders = [r.worker_id for r in request.reports] + [d.worker_id for d in request.outputs]
        await refuse_impersonation(context, set(senders))
        reports, deltas = list(request.reports), list(request.outputs)
        try:
            # Not atomic: a batch that fails half-way is sent again, and the half already
            # applied then changes nothing.
            outcome = await in_transaction(
                self.pool, lambda conn: record_reports(conn, reports, deltas), atomic=False
            )
        except DB_ERRORS as exc:
            DATABASE_ERRORS.labels("report").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        transitions.started(outcome.started)
        transitions.ended(outcome.ended)
        # A freed slot matters only when the last claim was short of slots; a task back in
        # the queue may be due before the dispatcher's next look.
        if outcome.ended and (
            self.wakeups.slots_wanted
            or any(e.task_status == TaskStatus.QUEUED for e in outcome.ended)
        ):
            self.wakeups.dispatch.set()
        return pb.ReportStatusResponse(stale=outcome.stale)


async def refuse_impersonation(context: Any, worker_ids: Iterable[str]) -> None:
    problem = grpc_security.impersonation(context, worker_ids)
    if problem:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)


async def serve(config: CoordinatorConfig, stop: asyncio.Event) -> None:
    """Run the gRPC service and the background loops until stop is set."""
    await migrate_until_done(config.database_url, stop)
    pool = make_pool(config.database_url, 2, config.pool_max_size, "skiplock-coordinator")
    await pool.open(wait=False)
    wakeups = Wakeups()
    stubs = WorkerStubs(config.security)
    dispatcher = Dispatcher(pool, config, wakeups, stubs)
    server = grpc_security.server(config.security, caller_role=grpc_security.WORKER)
    service = CoordinatorService(pool, config, wakeups)
    pb_grpc.add_CoordinatorServicer_to_server(service, server)
    health = grpc_security.Health(server)
    port = grpc_security.add_port(server, config.listen.grpc_target(), config.security)
    await server.start()
    await health.serving()
    metrics_port = None
    if config.metrics_port is not None:
        metrics_port = serve_metrics(config.listen.bind_host, config.metrics_port)
        log.info("metrics on http://%s:%d/metrics", config.listen.bind_host, metrics_port)
    write_ready_file(config.ready_file, config.listen.bind_host, port, metrics_port)
    log.info("coordinator serving on %s", replace(config.listen, port=port).grpc_target())
    try:
        await supervise(
            stop,
            {
                "listen": lambda: listen_loop(config.database_url, wakeups, stop),
                "dispatch": lambda: dispatcher.dispatch_loop(stop),
                "stops": lambda: stop_loop(pool, config, wakeups, stubs, stop),
                "reaper": lambda: reaper_loop(pool, config, wakeups, stop),
                "cron": lambda: cron_loop(pool, config, wakeups, stop),
                "prune-events": lambda: event_pruning_loop(pool, stop),
                "retention": lambda: retention_loop(pool, config.retention, stop),
            },
        )
    finally:
        await health.stopping()
        service.streams.stop()
        await server.stop(grace=5.0)
        await stubs.close()
        await pool.close()
