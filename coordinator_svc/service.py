"""The coordinator's gRPC service and its lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import grpc
import psycopg
from psycopg_pool import AsyncConnectionPool

from common import grpc_security
from common.limits import is_wildcard_host
from common.loops import supervise
from common.output import MAX_OUTPUT_CAP_BYTES
from common.ready import write_ready_file
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.cron import cron_loop
from coordinator_svc.dispatcher import Dispatcher
from coordinator_svc.recovery import reaper_loop
from coordinator_svc.reports import record_heartbeat, record_reports
from coordinator_svc.stops import stop_loop
from coordinator_svc.wakeups import Wakeups, listen_loop
from coordinator_svc.worker_stubs import WorkerStubs
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from store.db import DB_ERRORS, in_transaction, make_pool
from store.migrate import migrate_until_done

log = logging.getLogger(__name__)
MAX_HELD = 10_000
MAX_REPORTS = 1_000


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, pool: AsyncConnectionPool, config: CoordinatorConfig, wakeups: Wakeups):
        self.pool = pool
        self.config = config
        self.wakeups = wakeups

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        problem = heartbeat_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

        async def work(conn: psycopg.AsyncConnection[Any]) -> Any:
            return await record_heartbeat(conn, request, self.config.handover_grace)

        try:
            outcome = await in_transaction(self.pool, work)
        except DB_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
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
        if len(request.reports) > MAX_REPORTS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many reports in one call")
        problem = outputs_problem(request.outputs)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        reports, deltas = list(request.reports), list(request.outputs)
        try:
            # Not atomic: a batch that fails half-way is sent again, and the half already
            # applied then changes nothing.
            stale, ended = await in_transaction(
                self.pool, lambda conn: record_reports(conn, reports, deltas), atomic=False
            )
        except DB_ERRORS as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        if ended:
            self.wakeups.dispatch.set()
        return pb.ReportStatusResponse(stale=stale)


def outputs_problem(deltas: Sequence[pb.OutputDelta]) -> str:
    """What is wrong with the output deltas of a ReportStatus call ('' when nothing)."""
    if len(deltas) > MAX_REPORTS:
        return "too many output deltas in one call"
    for d in deltas:
        problem = delta_problem(d)
        if problem:
            return f"output delta for {d.ref.task_id[:64]!r} attempt {d.ref.attempt}: {problem}"
    return ""


def delta_problem(d: pb.OutputDelta) -> str:
    if not 1 <= d.cap <= MAX_OUTPUT_CAP_BYTES:
        return f"cap must be 1-{MAX_OUTPUT_CAP_BYTES}"
    if not d.head and not d.tail:
        return "carries no bytes"
    # The head's bytes end at the cap when a tail follows, else at size.
    head_end = d.cap if d.tail else d.size
    if d.head and not (d.head_offset >= 0 and d.head_offset + len(d.head) == head_end <= d.cap):
        return "head must end at size, or at cap when a tail follows"
    if d.tail and not (d.cap <= d.tail_offset and len(d.tail) <= d.cap):
        return "tail must hold at most cap bytes from cap or later"
    if d.tail and d.tail_offset + len(d.tail) != d.size:
        return "tail must end at size"
    return ""


def heartbeat_problem(request: pb.HeartbeatRequest) -> str:
    if not 1 <= len(request.worker_id) <= 200:
        return "worker_id must be 1-200 characters"
    host, sep, port = request.address.rpartition(":")
    if not sep or not port.isdigit() or is_wildcard_host(host):
        return f"address {request.address!r} is not a reachable host:port"
    if not 0 <= request.slots <= 10_000:
        return "slots must be 0-10000"
    if len(request.held) > MAX_HELD:
        return "too many held attempts"
    return ""


async def serve(config: CoordinatorConfig, stop: asyncio.Event) -> None:
    """Run the gRPC service and the background loops until stop is set."""
    await migrate_until_done(config.database_url, stop)
    pool = make_pool(config.database_url, 2, config.pool_max_size, "skiplock-coordinator")
    await pool.open(wait=False)
    wakeups = Wakeups()
    stubs = WorkerStubs(config.security)
    dispatcher = Dispatcher(pool, config, wakeups, stubs)
    server = grpc_security.server(config.security, caller_role=grpc_security.WORKER)
    pb_grpc.add_CoordinatorServicer_to_server(CoordinatorService(pool, config, wakeups), server)
    port = grpc_security.add_port(server, config.listen.grpc_target(), config.security)
    await server.start()
    write_ready_file(config.ready_file, config.listen.bind_host, port)
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
            },
        )
    finally:
        await server.stop(grace=5.0)
        await stubs.close()
        await pool.close()
