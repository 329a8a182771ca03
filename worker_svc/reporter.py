"""Delivers status reports to the coordinators, in order, retrying until each is accepted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from common.loops import Backoff, Pacer, wait_any
from proto import skiplock_pb2 as pb
from worker_svc.coordinator_client import CoordinatorClient, NoCoordinatorReachable

log = logging.getLogger(__name__)

Key = tuple[str, int]
MAX_BATCH = 500
# At most one delivery per this many seconds: a command that ends within it is reported once
# (start and end together), and reports of busy slots travel in one call.
REPORT_INTERVAL = 0.005


class Reporter:
    """Holds undelivered reports; the worker lists their attempts in heartbeats until delivered."""

    def __init__(self, client: CoordinatorClient, on_stale: Callable[[Key], None]) -> None:
        self._client = client
        self._on_stale = on_stale
        self._pending: dict[Key, list[pb.StatusReport]] = {}
        self._ready = asyncio.Event()
        self._pacer = Pacer(REPORT_INTERVAL)

    def add(self, report: pb.StatusReport) -> None:
        key = (report.ref.task_id, report.ref.attempt)
        queue = self._pending.setdefault(key, [])
        if report.state != pb.ATTEMPT_STATE_RUNNING:
            # A final report carries the start time too; an undelivered RUNNING adds nothing.
            queue[:] = [r for r in queue if r.state != pb.ATTEMPT_STATE_RUNNING]
        queue.append(report)
        self._ready.set()

    def held(self) -> set[Key]:
        return set(self._pending)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def pending(self) -> list[pb.StatusReport]:
        """Undelivered reports, in the order they are sent."""
        return [report for reports in self._pending.values() for report in reports]

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver batches until stopped; back off while no coordinator answers."""
        backoff = Backoff(0.05, 2.0)
        while not stop.is_set():
            await wait_any([self._ready, stop], 1.0)
            self._ready.clear()
            if not self._pending:
                continue
            await self._pacer.turn()
            if await self.deliver_once():
                backoff.reset()
            else:
                await backoff.wait(stop)

    async def flush(self, deadline_seconds: float) -> bool:
        """Try to deliver everything before a shutdown; True when nothing is left."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_seconds
        while self._pending and loop.time() < end:
            if not await self.deliver_once():
                await asyncio.sleep(0.2)
        return not self._pending

    async def deliver_once(self) -> bool:
        batch: list[pb.StatusReport] = []
        for reports in self._pending.values():
            batch.extend(reports)
            if len(batch) >= MAX_BATCH:
                break
        try:
            response = await self._client.report(pb.ReportStatusRequest(reports=batch), 10.0)
        except NoCoordinatorReachable as exc:
            log.warning("reports not delivered, will retry: %s", exc)
            return False
        self._forget(batch)
        for ref in response.stale:
            self._on_stale((ref.task_id, ref.attempt))
        return True

    def _forget(self, delivered: list[pb.StatusReport]) -> None:
        for report in delivered:
            key = (report.ref.task_id, report.ref.attempt)
            queue = self._pending.get(key)
            if queue is None:
                continue
            queue[:] = [r for r in queue if r is not report]
            if not queue:
                del self._pending[key]
