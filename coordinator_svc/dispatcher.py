"""Claiming due tasks and handing them to workers; delivering cancellations."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from common.grpc_auth import call_metadata
from common.loops import wait_any
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.wakeups import Wakeups
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from store import queries
from store.db import in_transaction
from store.models import AttemptEnd, Claim, ClaimedAttempt, StopRequest

log = logging.getLogger(__name__)

DB_ERRORS = (psycopg.Error, PoolTimeout)


class WorkerStubs:
    """One channel per worker address, reused across calls."""

    def __init__(self, token: str | None) -> None:
        self.metadata = call_metadata(token)
        self._stubs: dict[str, tuple[grpc.aio.Channel, pb_grpc.WorkerStub]] = {}

    def get(self, address: str) -> pb_grpc.WorkerStub:
        if address not in self._stubs:
            channel = grpc.aio.insecure_channel(address)
            self._stubs[address] = (channel, pb_grpc.WorkerStub(channel))
        return self._stubs[address][1]

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()


class Dispatcher:
    def __init__(
        self, pool: AsyncConnectionPool, config: CoordinatorConfig, wakeups: Wakeups
    ) -> None:
        self.pool = pool
        self.config = config
        self.wakeups = wakeups
        self.stubs = WorkerStubs(config.token)
        self.rotation = 0
        self._handovers: set[asyncio.Task[None]] = set()

    async def dispatch_loop(self, stop: asyncio.Event) -> None:
        """Claim as long as work and slots are there; otherwise sleep until the next due time,
        a wake-up or the poll interval, whichever comes first."""
        while not stop.is_set():
            self.wakeups.dispatch.clear()
            try:
                delay = await self.dispatch_once()
            except DB_ERRORS as exc:
                log.warning("dispatch failed (%s); retrying", exc)
                delay = self.config.poll_interval
            if delay > 0:
                await wait_any([stop, self.wakeups.dispatch], delay)
        await self.finish_handovers()

    async def dispatch_once(self) -> float:
        """Claim and hand over one batch; return how long to wait before the next one."""

        async def claim(conn: psycopg.AsyncConnection[Any]) -> Claim:
            return await queries.claim_for_free_slots(conn, self.config.lost_after, self.rotation)

        # One statement, so no transaction around it: one round trip per batch.
        claim_ = await in_transaction(self.pool, claim, atomic=False)
        self.rotation += 1
        for attempt in claim_.attempts:
            task = asyncio.create_task(self.hand_over(attempt))
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)
        if claim_.free == 0:
            return self.config.poll_interval  # woken early when a slot frees up
        if claim_.attempts and len(claim_.attempts) == claim_.free:
            return 0.0  # maybe more is due
        if claim_.next_due_in is None:
            return self.config.poll_interval
        return min(max(claim_.next_due_in, 0.0), self.config.poll_interval)

    async def hand_over(self, claimed: ClaimedAttempt) -> None:
        """Call the worker; when it refuses or cannot be reached, give the task back."""
        not_before = Timestamp()
        not_before.FromDatetime(claimed.run_at)
        request = pb.SubmitTaskRequest(
            ref=pb.AttemptRef(task_id=str(claimed.task_id), attempt=claimed.attempt),
            command=claimed.command,
            timeout_ms=round((claimed.timeout_seconds or 0) * 1000),
            not_before=not_before,
            kill_grace_ms=round(self.config.kill_grace * 1000),
        )
        try:
            response = await self.stubs.get(claimed.address).SubmitTask(
                request, timeout=self.config.submit_timeout, metadata=self.stubs.metadata
            )
        except grpc.aio.AioRpcError as exc:
            reason, detail = "worker_unreachable", f"{exc.code().name}: {exc.details()}"
        else:
            if response.accepted:
                return
            reason, detail = "worker_refused", response.reason
        log.info(
            "attempt %s/%d not taken by %s: %s",
            claimed.task_id,
            claimed.attempt,
            claimed.worker_id,
            detail,
        )
        end = AttemptEnd(
            claimed.task_id,
            claimed.attempt,
            "failed",
            reason,
            consumes_retry=False,
            worker_id=claimed.worker_id,
            detail=detail,
        )
        await self.end_with_retry(end)
        self.wakeups.dispatch.set()

    async def end_with_retry(self, end: AttemptEnd) -> None:
        """Record an ending decided here; keep trying through a database outage."""
        delay = 0.2
        while True:
            try:
                await in_transaction(self.pool, lambda conn: queries.end_attempt(conn, end))
                return
            except DB_ERRORS as exc:
                log.warning("could not record attempt end (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def finish_handovers(self) -> None:
        if self._handovers:
            await asyncio.wait(list(self._handovers), timeout=self.config.submit_timeout + 1)
        await self.stubs.close()

    async def stop_loop(self, stop: asyncio.Event) -> None:
        """Tell workers to stop attempts whose task was cancelled (re-sent until they end)."""
        while not stop.is_set():
            self.wakeups.stops.clear()
            try:
                requests = await in_transaction(
                    self.pool, lambda conn: queries.take_pending_stops(conn, 5.0, 100)
                )
            except DB_ERRORS as exc:
                log.warning("could not read pending cancellations (%s)", exc)
                requests = []
            await asyncio.gather(*(self.send_stop(r) for r in requests))
            await wait_any([stop, self.wakeups.stops], self.config.poll_interval)

    async def send_stop(self, request: StopRequest) -> None:
        message = pb.CancelTaskRequest(
            ref=pb.AttemptRef(task_id=str(request.task_id), attempt=request.attempt),
            grace_ms=round(self.config.kill_grace * 1000),
        )
        try:
            await self.stubs.get(request.address).CancelTask(
                message, timeout=self.config.submit_timeout, metadata=self.stubs.metadata
            )
        except grpc.aio.AioRpcError as exc:
            # Re-sent later; a worker that stays unreachable is declared lost instead.
            log.info(
                "cancel of %s/%d not delivered to %s: %s",
                request.task_id,
                request.attempt,
                request.worker_id,
                exc.code().name,
            )
