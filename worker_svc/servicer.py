"""The worker's gRPC edge: turns SubmitTasks (or SubmitStream) and CancelTask calls into work
for the Worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from common.streams import StreamEnds
from proto import checks
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from proto.timestamps import from_timestamp
from worker_svc.process import Execution, Limits

if TYPE_CHECKING:
    from worker_svc.service import Worker

MAX_ATTEMPTS_PER_CALL = 1000


class WorkerServicer(pb_grpc.WorkerServicer):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.streams = StreamEnds()

    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Any
    ) -> pb.SubmitTasksResponse:
        if not 1 <= len(request.attempts) <= MAX_ATTEMPTS_PER_CALL:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"send 1-{MAX_ATTEMPTS_PER_CALL} attempts per call",
            )
        return pb.SubmitTasksResponse(results=[self.submit(a) for a in request.attempts])

    async def SubmitStream(
        self, requests: AsyncIterator[pb.SubmitTasksRequest], context: Any
    ) -> AsyncIterator[pb.SubmitTasksResponse]:
        # Headers at once: the coordinator writes its first hand-over only once the stream is
        # known to be up, so one that fails before is known never to have been seen.
        await context.send_initial_metadata(())
        async for request in self.streams.requests(requests):
            yield await self.SubmitTasks(request, context)

    def submit(self, request: pb.SubmitTaskRequest) -> pb.SubmitTaskResponse:
        """Accept one attempt and start it in the background, or say why not."""
        key = (request.ref.task_id, request.ref.attempt)
        if self.worker.holds(key):  # a retried hand-over of an attempt we already hold
            return pb.SubmitTaskResponse(accepted=True)
        refusal = self.refusal(request)
        if refusal:
            return pb.SubmitTaskResponse(accepted=False, reason=refusal)
        self.worker.start(
            Execution(
                task_id=request.ref.task_id,
                attempt=request.ref.attempt,
                command=request.command,
                timeout=request.timeout_ms / 1000 if request.timeout_ms > 0 else None,
                output_path=self.worker.output_path(request.ref.task_id, request.ref.attempt),
                not_before=from_timestamp(request, "not_before"),
                output_cap=self.worker.output_cap(
                    request.output_cap_bytes if request.HasField("output_cap_bytes") else None
                ),
                env=self.worker.command_env(
                    request.ref.task_id, request.ref.attempt, dict(request.env)
                ),
                cwd=request.cwd or None,
                success_exit_codes=frozenset(request.success_exit_codes or [0]),
                limits=limits_of(request),
            )
        )
        return pb.SubmitTaskResponse(accepted=True)

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Any
    ) -> pb.CancelTaskResponse:
        problem = checks.cancel_problem(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        self.worker.stop_attempt(
            (request.ref.task_id, request.ref.attempt), pb.ATTEMPT_STATE_CANCELLED
        )
        return pb.CancelTaskResponse()

    def refusal(self, request: pb.SubmitTaskRequest) -> str:
        if self.worker.draining:
            return "worker is draining"
        if self.worker.free_slots() == 0:
            return "no free slot"
        return checks.attempt_problem(request)


def limits_of(request: pb.SubmitTaskRequest) -> Limits | None:
    """The attempt's resource limits; None when it sets none."""
    limits = Limits(
        memory_bytes=request.memory_limit_bytes if request.HasField("memory_limit_bytes") else None,
        cpu_seconds=request.cpu_limit_seconds if request.HasField("cpu_limit_seconds") else None,
        open_files=request.open_files_limit if request.HasField("open_files_limit") else None,
    )
    return None if limits == Limits() else limits
