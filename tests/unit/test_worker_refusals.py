"""The worker's answers to hand-overs, through its real gRPC server in this process: what it
refuses and why, and that a repeated hand-over never starts an attempt twice. Real bash; the
coordinators it would report to are not running."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from common.limits import MAX_COMMAND_BYTES
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from tests.support.inprocess import eventually, refusing_address, serving_worker, worker_config
from worker_svc.config import WorkerConfig
from worker_svc.service import Worker


@pytest.fixture
def config(tmp_path: Path) -> Iterator[WorkerConfig]:
    with refusing_address() as coordinator:
        yield worker_config(tmp_path, coordinator)


@asynccontextmanager
async def serving(config: WorkerConfig) -> AsyncIterator[tuple[Worker, pb_grpc.WorkerStub]]:
    async with (
        serving_worker(config) as (worker, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield worker, pb_grpc.WorkerStub(channel)


def attempt(
    command: str = "true",
    task_id: str | None = None,
    number: int = 1,
    timeout_ms: int = 0,
    not_before_seconds: int | None = None,
) -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest(
        ref=pb.AttemptRef(task_id=task_id or str(uuid.uuid4()), attempt=number),
        command=command,
        timeout_ms=timeout_ms,
    )
    if not_before_seconds is not None:
        request.not_before.seconds = not_before_seconds
    return request


async def submit(stub: pb_grpc.WorkerStub, *attempts: pb.SubmitTaskRequest) -> list[str | None]:
    """None for each accepted attempt, its reason for each refused one."""
    response = await stub.SubmitTasks(pb.SubmitTasksRequest(attempts=attempts), timeout=5)
    assert len(response.results) == len(attempts)
    return [None if r.accepted else r.reason for r in response.results]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: attempt(task_id="not-a-uuid"), "ref.task_id must be a UUID"),
        (lambda: attempt(number=0), "ref.attempt must be >= 1"),
        (lambda: attempt(""), f"command must be 1-{MAX_COMMAND_BYTES} bytes, not 0"),
        (lambda: attempt("echo \x00"), "command must not contain NUL characters"),
        (lambda: attempt("#" * (MAX_COMMAND_BYTES + 1)), "command must be"),
        (lambda: attempt(timeout_ms=-1), "timeout_ms is out of range"),
        (lambda: attempt(not_before_seconds=-(10**12)), "not_before is out of range"),
    ],
    ids=["bad-uuid", "attempt-0", "empty-command", "nul", "too-long", "timeout", "not-before"],
)
def test_a_malformed_attempt_is_refused_with_its_reason(
    config, make: Callable[[], pb.SubmitTaskRequest], reason: str
):
    async def scenario() -> list[str | None]:
        async with serving(config) as (worker, stub):
            answer = await submit(stub, make(), attempt("true"))
            assert len(worker.held()) == 1
            return answer

    refused, accepted = asyncio.run(scenario())
    assert refused is not None and refused.startswith(reason)
    assert accepted is None


def test_a_command_of_exactly_the_limit_is_accepted(config):
    async def scenario() -> list[str | None]:
        async with serving(config) as (_, stub):
            return await submit(stub, attempt("#" * MAX_COMMAND_BYTES))

    assert asyncio.run(scenario()) == [None]


def test_no_free_slot_refuses_and_a_finished_attempt_frees_its_slot(config, tmp_path):
    flag = tmp_path / "go"
    hold = f"until [ -e {flag} ]; do sleep 0.02; done"

    async def scenario() -> None:
        async with serving(config) as (worker, stub):
            assert await submit(stub, attempt(hold), attempt(hold), attempt(hold)) == [
                None, None, "no free slot"
            ]
            flag.touch()
            await eventually(lambda: worker.free_slots() == 2, message="both slots free")
            assert await submit(stub, attempt("true")) == [None]

    asyncio.run(scenario())


def test_a_draining_worker_refuses_everything(config):
    async def scenario() -> list[str | None]:
        async with serving(config) as (worker, stub):
            await worker.drain()
            return await submit(stub, attempt("true"))

    assert asyncio.run(scenario()) == ["worker is draining"]


def test_a_repeated_hand_over_is_accepted_and_runs_once(config, tmp_path):
    log = tmp_path / "runs"
    again = attempt(f"echo ran >> {log}")

    async def scenario() -> None:
        async with serving(config) as (worker, stub):
            assert await submit(stub, again, again) == [None, None]
            await eventually(lambda: not worker.executions, message="the command to end")
            # Its final report is still held (no coordinator): still the same attempt.
            assert await submit(stub, again) == [None]
            assert not worker.executions

    asyncio.run(scenario())
    assert log.read_text() == "ran\n"


@pytest.mark.parametrize("count", [0, 1001])
def test_a_call_with_no_or_too_many_attempts_is_invalid(config, count):
    async def scenario() -> grpc.StatusCode:
        async with serving(config) as (_, stub):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await submit(stub, *[attempt() for _ in range(count)])
            return failure.value.code()

    assert asyncio.run(scenario()) == grpc.StatusCode.INVALID_ARGUMENT


def test_cancel_stops_a_held_attempt_and_an_unknown_one_changes_nothing(config, tmp_path):
    running, other = attempt("sleep 100"), attempt(f"touch {tmp_path / 'ran'}")

    async def scenario() -> list[pb.StatusReport]:
        async with serving(config) as (worker, stub):
            await submit(stub, running)
            await eventually(lambda: worker.reporter.held(), message="the RUNNING report")
            await stub.CancelTask(pb.CancelTaskRequest(ref=other.ref), timeout=5)
            await stub.CancelTask(pb.CancelTaskRequest(ref=running.ref), timeout=5)
            await eventually(lambda: not worker.executions, message="the cancelled command")
            assert await submit(stub, other) == [None]
            await eventually(lambda: not worker.executions, message="the other command")
            return worker.reporter.pending()

    reports = {r.ref.task_id: r for r in asyncio.run(scenario())}
    cancelled, ran = reports[running.ref.task_id], reports[other.ref.task_id]
    assert (cancelled.state, cancelled.exit_code) == (pb.ATTEMPT_STATE_CANCELLED, 128 + 15)
    assert (ran.state, ran.exit_code) == (pb.ATTEMPT_STATE_SUCCEEDED, 0)
