"""The worker: accepts attempts up to its slots, runs them, heartbeats, drains on shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from common.loops import wait_any
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from worker_svc.config import WorkerConfig
from worker_svc.coordinator_client import CoordinatorClient, NoCoordinatorReachable
from worker_svc.process import Execution, Outcome, ProcessRunner
from worker_svc.reporter import Key, Reporter

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 65536
MAX_ATTEMPTS_PER_CALL = 1000
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


class Worker(pb_grpc.WorkerServicer):
    def __init__(self, config: WorkerConfig, client: CoordinatorClient) -> None:
        self.config = config
        self.client = client
        self.runner = ProcessRunner(config.kill_grace)
        self.reporter = Reporter(client, self.on_stale)
        self.executions: dict[Key, Execution] = {}
        self.draining = False
        self.heartbeat_now = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        config.output_dir.mkdir(parents=True, exist_ok=True)

    # --- gRPC ---------------------------------------------------------------------------------

    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Any
    ) -> pb.SubmitTasksResponse:
        if not 1 <= len(request.attempts) <= MAX_ATTEMPTS_PER_CALL:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"send 1-{MAX_ATTEMPTS_PER_CALL} attempts per call",
            )
        return pb.SubmitTasksResponse(results=[self.submit(a) for a in request.attempts])

    def submit(self, request: pb.SubmitTaskRequest) -> pb.SubmitTaskResponse:
        """Accept one attempt and start it in the background, or say why not."""
        key = (request.ref.task_id, request.ref.attempt)
        if key in self.executions:  # a retried hand-over of an attempt we already hold
            return pb.SubmitTaskResponse(
                accepted=True, output_path=str(self.executions[key].output_path)
            )
        refusal = self.refusal(request)
        if refusal:
            return pb.SubmitTaskResponse(accepted=False, reason=refusal)
        execution = Execution(
            task_id=request.ref.task_id,
            attempt=request.ref.attempt,
            command=request.command,
            timeout=request.timeout_ms / 1000 if request.timeout_ms > 0 else None,
            output_path=self.output_path(request.ref.task_id, request.ref.attempt),
            not_before=request.not_before.ToDatetime(UTC)
            if request.HasField("not_before")
            else None,
        )
        self.executions[key] = execution
        self.spawn_background(self.run(execution))
        return pb.SubmitTaskResponse(accepted=True, output_path=str(execution.output_path))

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Any
    ) -> pb.CancelTaskResponse:
        key = (request.ref.task_id, request.ref.attempt)
        found = key in self.executions or key in self.reporter.held()
        self.stop_attempt(key, pb.ATTEMPT_STATE_CANCELLED)
        return pb.CancelTaskResponse(found=found)

    def refusal(self, request: pb.SubmitTaskRequest) -> str:
        if self.draining:
            return "worker is draining"
        if self.running_count() >= self.config.slots:
            return "no free slot"
        try:
            uuid.UUID(request.ref.task_id)
        except ValueError:
            return "task_id is not a UUID"
        if request.ref.attempt < 1:
            return "attempt must be >= 1"
        command_size = len(request.command.encode())
        if not 0 < command_size <= MAX_COMMAND_BYTES or "\x00" in request.command:
            return "command must be 1-65536 bytes without NUL"
        return ""

    # --- attempts -----------------------------------------------------------------------------

    def running_count(self) -> int:
        return sum(1 for e in self.executions.values() if not e.finished.is_set())

    def output_path(self, task_id: str, attempt: int) -> Any:
        worker = _UNSAFE_FILENAME.sub("_", self.config.worker_id)
        return self.config.output_dir / f"{worker}-{task_id}-{attempt}.log"

    def spawn_background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, execution: Execution) -> None:
        try:
            outcome = await self.execute(execution)
            self.report(execution, outcome.state, outcome)
        finally:
            execution.finished.set()
            self.executions.pop(execution.key, None)

    async def execute(self, execution: Execution) -> Outcome:
        error = None
        if execution.stopped_as is None:
            error = await self.runner.start(execution)
        if execution.proc is None:
            state = execution.stopped_as or pb.ATTEMPT_STATE_SPAWN_FAILED
            return Outcome(state, None, None, datetime.now(UTC), error or "stopped before start")
        self.report(execution, pb.ATTEMPT_STATE_RUNNING, None)
        return await self.runner.wait(execution)

    def report(
        self, execution: Execution, state: pb.AttemptState.ValueType, outcome: Outcome | None
    ) -> None:
        report = pb.StatusReport(
            ref=pb.AttemptRef(task_id=execution.task_id, attempt=execution.attempt),
            worker_id=self.config.worker_id,
            state=state,
            started_at=timestamp(execution.started_at),
            output_path=str(execution.output_path),
        )
        if outcome is not None:
            report.finished_at.FromDatetime(outcome.finished_at)
            if outcome.exit_code is not None:
                report.exit_code = outcome.exit_code
            report.detail = outcome.detail
        self.reporter.add(report)

    def stop_attempt(self, key: Key, state: pb.AttemptState.ValueType) -> None:
        execution = self.executions.get(key)
        if execution is not None and not execution.finished.is_set():
            self.spawn_background(self.runner.stop(execution, state))

    def on_stale(self, key: Key) -> None:
        """A coordinator says the attempt is no longer ours: stop it if it still runs."""
        self.stop_attempt(key, pb.ATTEMPT_STATE_CANCELLED)

    def held(self) -> list[pb.AttemptRef]:
        keys = set(self.executions) | self.reporter.held()
        return [pb.AttemptRef(task_id=t, attempt=a) for t, a in sorted(keys)]

    # --- loops --------------------------------------------------------------------------------

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        """Heartbeat every interval; keep trying while coordinators are down."""
        while not stop.is_set():
            await self.heartbeat_once()
            self.heartbeat_now.clear()
            await wait_any([stop, self.heartbeat_now], self.config.heartbeat_interval)

    async def heartbeat_once(self) -> None:
        request = pb.HeartbeatRequest(
            worker_id=self.config.worker_id,
            address=self.config.advertise_address,
            slots=self.config.slots,
            free_slots=max(self.config.slots - self.running_count(), 0),
            draining=self.draining,
            held=self.held(),
        )
        try:
            response = await self.client.heartbeat(request, timeout=2.0)
        except NoCoordinatorReachable as exc:
            log.warning("heartbeat not delivered: %s", exc)
            return
        for ref in response.revoked:
            self.stop_attempt((ref.task_id, ref.attempt), pb.ATTEMPT_STATE_CANCELLED)

    async def drain(self) -> None:
        """Stop taking work, let running commands finish up to the drain timeout, then stop them."""
        self.draining = True
        await self.heartbeat_once()
        running = [e.finished.wait() for e in self.executions.values()]
        if running:
            log.info(
                "draining %d running attempt(s), up to %.0fs",
                len(running),
                self.config.drain_timeout,
            )
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in running], timeout=self.config.drain_timeout
            )
        for key in list(self.executions):
            self.stop_attempt(key, pb.ATTEMPT_STATE_SHUTDOWN)
        remaining = [e.finished.wait() for e in self.executions.values()]
        if remaining:
            await asyncio.wait(
                [asyncio.ensure_future(w) for w in remaining],
                timeout=self.config.kill_grace + 2,
            )
        if not await self.reporter.flush(10.0):
            log.error(
                "shutting down with undelivered reports; coordinators will declare "
                "this worker lost and recover its attempts"
            )
        await self.heartbeat_once()


async def serve(config: WorkerConfig, stop: asyncio.Event, server: grpc.aio.Server) -> None:
    """Run until stop is set, then drain and shut down."""
    client = CoordinatorClient(config.coordinators, config.token)
    worker = Worker(config, client)
    pb_grpc.add_WorkerServicer_to_server(worker, server)
    server.add_insecure_port(config.listen.grpc_target())
    await server.start()
    log.info(
        "worker %s serving on %s, advertising %s, %d slots",
        config.worker_id,
        config.listen.grpc_target(),
        config.advertise_address,
        config.slots,
    )
    inner_stop = asyncio.Event()
    loops = [
        asyncio.create_task(worker.heartbeat_loop(inner_stop)),
        asyncio.create_task(worker.reporter.run(inner_stop)),
    ]
    await stop.wait()
    await worker.drain()
    inner_stop.set()
    await asyncio.gather(*loops, return_exceptions=True)
    await server.stop(grace=1.0)
    await client.close()
