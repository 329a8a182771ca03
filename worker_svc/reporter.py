"""Delivers status reports, and the output of the attempts they are about, to the
coordinators, in order, retrying until each is accepted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from common.loops import Backoff, Pacer
from proto import skiplock_pb2 as pb
from worker_svc.coordinator_client import CoordinatorClient, NoCoordinatorReachable
from worker_svc.output import OutputFile

log = logging.getLogger(__name__)

Key = tuple[str, int]
MAX_BATCH = 500
# At most one delivery per this many seconds: a command that ends within it is reported once
# (start and end together), and reports of busy slots travel in one call.
REPORT_INTERVAL = 0.005
# A start is reported no sooner than this after it happened: a command that ends within it is
# reported once, its final report carrying its start, which saves a database write per short
# command. Deliveries of other attempts' reports meanwhile leave it out (a shutdown's flush
# takes it early). The database says "dispatched" that much longer; when it started comes from
# the worker's clock either way.
START_REPORT_DELAY = 0.05
# Output of running attempts is shipped at most this often (a follower reads it about this far
# behind); an attempt's last output always travels with its final report.
OUTPUT_INTERVAL = 0.5
# Output bytes after which a delivery takes no further attempt. An attempt's delta holds at
# most twice the largest cap (1 MiB), so a call stays well within gRPC's 4 MiB message limit.
OUTPUT_BYTES_PER_DELIVERY = 1024 * 1024


class Reporter:
    """Holds undelivered reports; the worker lists their attempts in heartbeats until delivered.
    Also ships the output of the attempts it follows, from their start to their final report."""

    def __init__(
        self, client: CoordinatorClient, worker_id: str, on_stale: Callable[[Key], None]
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._on_stale = on_stale
        self._pending: dict[Key, list[pb.StatusReport]] = {}
        # When the attempts whose only pending report is a start were added (loop time).
        self._started: dict[Key, float] = {}
        self._outputs: dict[Key, OutputFile] = {}
        # The delivery loop sleeps on `_bell` until `_sleep_until` (loop time); a report due
        # before then rings it, one that is due later (a start) leaves it asleep.
        self._bell: asyncio.Future[None] | None = None
        self._sleep_until = 0.0
        self._pacer = Pacer(REPORT_INTERVAL)
        self._next_output_pass = 0.0

    def follow(self, key: Key, output: OutputFile) -> None:
        """Ship this attempt's output until its final report is delivered (or it is stale)."""
        self._outputs[key] = output

    def add(self, report: pb.StatusReport) -> None:
        key = (report.ref.task_id, report.ref.attempt)
        queue = self._pending.setdefault(key, [])
        now = asyncio.get_running_loop().time()
        due = now
        if report.state != pb.ATTEMPT_STATE_RUNNING:
            # A final report carries the start time too; an undelivered RUNNING adds nothing.
            if queue:
                queue[:] = [r for r in queue if r.state != pb.ATTEMPT_STATE_RUNNING]
            self._started.pop(key, None)
        elif not queue:
            self._started[key] = now
            due = now + START_REPORT_DELAY
        queue.append(report)
        if due < self._sleep_until:
            self._ring()

    def held(self) -> set[Key]:
        return set(self._pending)

    def holds(self, key: Key) -> bool:
        return key in self._pending

    def has_pending(self) -> bool:
        return bool(self._pending)

    def pending(self) -> list[pb.StatusReport]:
        """Undelivered reports, in the order they are sent."""
        return [report for reports in self._pending.values() for report in reports]

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver batches until stopped; back off while no coordinator answers."""
        backoff = Backoff(0.05, 2.0)
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._ring())
        try:
            while not stop.is_set():
                await self._sleep(min(self._until_output_pass(), self._until_due()))
                if self._until_due() > 0 and not self._output_grown():
                    continue
                await self._pacer.turn()
                if await self.deliver_once(early_starts=False):
                    backoff.reset()
                else:
                    await backoff.wait(stop)
        finally:
            stopping.cancel()

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` pass or the bell rings (a report due sooner, or the stop). One
        future and one timer, not a task per event watched: this runs for every report."""
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        self._bell = loop.create_future()
        self._sleep_until = loop.time() + seconds
        timer = loop.call_later(seconds, self._ring)
        try:
            await self._bell
        finally:
            timer.cancel()
            self._bell = None
            self._sleep_until = 0.0

    def _ring(self) -> None:
        if self._bell is not None and not self._bell.done():
            self._bell.set_result(None)

    async def flush(self, deadline_seconds: float) -> bool:
        """Try to deliver everything before a shutdown; True when nothing is left."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_seconds
        while self._pending and loop.time() < end:
            if not await self.deliver_once():
                await asyncio.sleep(0.2)
        return not self._pending

    async def deliver_once(self, early_starts: bool = True) -> bool:
        """Send what is pending in one call; False when no coordinator took it. `early_starts`
        False keeps back the starts not yet due (START_REPORT_DELAY), as the loop does."""
        batch, deltas = self._next_batch(early_starts)
        if not batch and not deltas:
            return True
        request = pb.ReportStatusRequest(reports=batch, outputs=deltas)
        try:
            response = await self._client.report(request, 10.0)
        except NoCoordinatorReachable as exc:
            log.warning("reports not delivered, will retry: %s", exc)
            return False
        for delta in deltas:
            output = self._outputs.get((delta.ref.task_id, delta.ref.attempt))
            if output is not None:
                output.acknowledge(delta)
        self._forget(batch)
        for ref in response.stale:
            self._unfollow((ref.task_id, ref.attempt))
            self._on_stale((ref.task_id, ref.attempt))
        return True

    def _next_batch(
        self, early_starts: bool = True
    ) -> tuple[list[pb.StatusReport], list[pb.OutputDelta]]:
        """Reports in order, each attempt's with its output when final (or when the output of
        running attempts is due), up to the batch and byte limits; without `early_starts`,
        not the starts that are not due yet (nor their output: it follows its start)."""
        now = asyncio.get_running_loop().time()
        outputs_due = now >= self._next_output_pass
        if outputs_due:
            self._next_output_pass = now + OUTPUT_INTERVAL
        kept_back: set[Key] = set()
        if not early_starts:
            kept_back = {k for k, at in self._started.items() if at + START_REPORT_DELAY > now}
        batch: list[pb.StatusReport] = []
        deltas: list[pb.OutputDelta] = []
        budget = OUTPUT_BYTES_PER_DELIVERY

        def add_output(key: Key) -> None:
            nonlocal budget
            output = self._outputs.get(key)
            delta = output.delta(self._ref(key), self._worker_id) if output else None
            if delta is not None:
                deltas.append(delta)
                budget -= len(delta.head) + len(delta.tail)

        for key, reports in self._pending.items():
            if len(batch) >= MAX_BATCH or budget <= 0:
                break
            if key in kept_back:
                continue
            batch.extend(reports)
            if outputs_due or reports[-1].state != pb.ATTEMPT_STATE_RUNNING:
                add_output(key)
        if outputs_due:
            for key in self._outputs.keys() - self._pending.keys():
                if len(deltas) >= MAX_BATCH or budget <= 0:
                    break
                add_output(key)
        return batch, deltas

    @staticmethod
    def _ref(key: Key) -> pb.AttemptRef:
        return pb.AttemptRef(task_id=key[0], attempt=key[1])

    def _until_due(self) -> float:
        """Seconds until a pending report is due: 0 for a final one, a start's delay for a
        start, an hour when nothing is pending."""
        if len(self._started) < len(self._pending):
            return 0.0
        if not self._started:
            return 3600.0
        first = min(self._started.values())
        return max(first + START_REPORT_DELAY - asyncio.get_running_loop().time(), 0.0)

    def _until_output_pass(self) -> float:
        """How long the delivery loop may sleep without delaying the output of a running
        attempt."""
        if not self._outputs:
            return 1.0
        return max(self._next_output_pass - asyncio.get_running_loop().time(), 0.0)

    def _output_grown(self) -> bool:
        """Whether the output of a running attempt is due and has grown since last shipped."""
        if asyncio.get_running_loop().time() < self._next_output_pass:
            return False
        if any(output.grown() for output in self._outputs.values()):
            return True
        self._next_output_pass = asyncio.get_running_loop().time() + OUTPUT_INTERVAL
        return False

    def _unfollow(self, key: Key) -> None:
        output = self._outputs.pop(key, None)
        if output is not None:
            output.close()

    def _forget(self, delivered: list[pb.StatusReport]) -> None:
        for report in delivered:
            key = (report.ref.task_id, report.ref.attempt)
            queue = self._pending.get(key)
            if queue is None:
                continue
            queue[:] = [r for r in queue if r is not report]
            if not queue:
                del self._pending[key]
                self._started.pop(key, None)
            if report.state != pb.ATTEMPT_STATE_RUNNING:
                self._unfollow(key)
