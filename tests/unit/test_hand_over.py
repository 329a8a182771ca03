"""A coordinator's hand-over to a real worker service in this process, against real
PostgreSQL: what becomes of attempts the worker refuses, cannot be reached for, or does not
answer about in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog

from common.config import ListenAddress
from common.grpc_security import GrpcSecurity
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.dispatcher import Dispatcher
from coordinator_svc.wakeups import Wakeups
from coordinator_svc.worker_stubs import WorkerStubs
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from store.models import AttemptRow
from tests.support.coordination import attempt_row, claim_for, open_pool
from tests.support.inprocess import (
    Recorder,
    grpc_server,
    refusing_address,
    serving_worker,
    silent_address,
    worker_config,
)
from worker_svc.config import WorkerConfig

WORKER = "worker-under-test"


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerConfig]:
    with refusing_address() as coordinator:
        yield worker_config(tmp_path, coordinator)


async def hand_over(
    database_url: str, address: str, count: int = 2, token: str | None = None, **config: Any
) -> list[AttemptRow]:
    """Claim `count` attempts for a worker at `address`, hand them over, return their rows."""
    settings = replace(
        CoordinatorConfig(ListenAddress("127.0.0.1", 0), database_url, GrpcSecurity(token)),
        **config,
    )
    async with open_pool(database_url) as pool:
        claimed = await claim_for(pool, WORKER, address, count)
        stubs = WorkerStubs(GrpcSecurity(token))
        try:
            await Dispatcher(pool, settings, Wakeups(), stubs).hand_over(claimed)
        finally:
            await stubs.close()
        return [await attempt_row(pool, c) for c in claimed]


def endings(rows: list[AttemptRow]) -> list[tuple[str, str | None]]:
    return [(r.status, r.reason) for r in rows]


def test_attempts_the_worker_takes_stay_its_own(database_url, worker):
    async def scenario() -> list[AttemptRow]:
        async with serving_worker(worker) as (_, address):
            return await hand_over(database_url, address)

    assert endings(asyncio.run(scenario())) == [("dispatched", None)] * 2


def test_attempts_the_worker_refuses_end_worker_refused_with_its_reason(database_url, worker):
    async def scenario() -> list[AttemptRow]:
        async with serving_worker(worker) as (live, address):
            live.draining = True
            return await hand_over(database_url, address)

    rows = asyncio.run(scenario())
    assert endings(rows) == [("failed", "worker_refused")] * 2
    assert {r.detail for r in rows} == {"worker is draining"}


def test_only_the_refused_part_of_a_hand_over_ends(database_url, tmp_path):
    with refusing_address() as coordinator:
        one_slot = worker_config(tmp_path, coordinator, slots=1)

        async def scenario() -> list[AttemptRow]:
            async with serving_worker(one_slot) as (_, address):
                return await hand_over(database_url, address)

        rows = asyncio.run(scenario())
    assert endings(rows) == [("dispatched", None), ("failed", "worker_refused")]
    assert rows[1].detail == "no free slot"


def test_a_worker_that_refuses_connections_is_worker_unreachable(database_url):
    with refusing_address() as address:
        rows = asyncio.run(hand_over(database_url, address))
    assert endings(rows) == [("failed", "worker_unreachable")] * 2
    assert all(r.detail and r.detail.startswith("UNAVAILABLE") for r in rows)


def test_a_worker_that_rejects_the_token_is_worker_unreachable(database_url, worker):
    async def scenario() -> list[AttemptRow]:
        secured = replace(worker, security=GrpcSecurity(token="right"))
        async with serving_worker(secured) as (_, address):
            return await hand_over(database_url, address, token="wrong")

    rows = asyncio.run(scenario())
    assert endings(rows) == [("failed", "worker_unreachable")] * 2
    assert all(r.detail and r.detail.startswith("UNAUTHENTICATED") for r in rows)


def test_a_worker_whose_stream_never_opens_is_worker_unreachable(database_url):
    # Nothing was written to it, so it cannot have started anything.
    with silent_address() as address:
        rows = asyncio.run(hand_over(database_url, address, submit_timeout=0.5))
    assert endings(rows) == [("failed", "worker_unreachable")] * 2
    assert all(r.detail and r.detail.startswith("DEADLINE_EXCEEDED") for r in rows)


class MuteWorker(pb_grpc.WorkerServicer):
    """Opens the hand-over stream, takes what is written to it and never answers."""

    def __init__(self) -> None:
        self.received: list[pb.SubmitTasksRequest] = []

    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Any
    ) -> pb.SubmitTasksResponse:
        raise AssertionError("hand-overs go on the stream")

    async def SubmitStream(
        self, requests: AsyncIterator[pb.SubmitTasksRequest], context: Any
    ) -> AsyncIterator[pb.SubmitTasksResponse]:
        await context.send_initial_metadata(())
        async for request in requests:
            self.received.append(request)
        yield pb.SubmitTasksResponse()  # never reached while the stream is open

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Any
    ) -> pb.CancelTaskResponse:
        return pb.CancelTaskResponse()


def test_no_answer_in_time_leaves_the_attempts_to_reconciliation(database_url):
    mute = MuteWorker()

    async def scenario() -> list[AttemptRow]:
        def add(server: grpc.aio.Server) -> None:
            pb_grpc.add_WorkerServicer_to_server(mute, server)

        async with grpc_server(add) as address:
            return await hand_over(database_url, address, submit_timeout=0.5)

    rows = asyncio.run(scenario())
    assert endings(rows) == [("dispatched", None)] * 2
    assert [len(r.attempts) for r in mute.received] == [2]


class MiscountingWorker(pb_grpc.WorkerServicer):
    """A worker breaking the contract: it accepts one attempt fewer than it was sent."""

    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Any
    ) -> pb.SubmitTasksResponse:
        return pb.SubmitTasksResponse(
            results=[pb.SubmitTaskResponse(accepted=False, reason="?")]
            * (len(request.attempts) - 1)
        )

    async def SubmitStream(
        self, requests: AsyncIterator[pb.SubmitTasksRequest], context: Any
    ) -> AsyncIterator[pb.SubmitTasksResponse]:
        await context.send_initial_metadata(())
        async for request in requests:
            yield await self.SubmitTasks(request, context)

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Any
    ) -> pb.CancelTaskResponse:
        return pb.CancelTaskResponse()


def test_an_answer_with_the_wrong_number_of_results_is_left_to_reconciliation(database_url):
    async def scenario() -> list[AttemptRow]:
        def add(server: grpc.aio.Server) -> None:
            pb_grpc.add_WorkerServicer_to_server(MiscountingWorker(), server)

        async with grpc_server(add) as address:
            return await hand_over(database_url, address, count=3)

    with structlog.testing.capture_logs() as logged:
        assert endings(asyncio.run(scenario())) == [("dispatched", None)] * 3
    errors = [e for e in logged if e["event"].startswith("protocol error")]
    assert [(e["log_level"], e["worker_id"], e["results"], e["attempts"]) for e in errors] == [
        ("error", "worker-under-test", 2, 3)
    ]


class OlderWorker(MiscountingWorker):
    """A worker of a version without SubmitStream: it answers SubmitTasks correctly, and
    counts the streams it was asked to open."""

    def __init__(self) -> None:
        self.stream_openings = 0

    async def SubmitTasks(
        self, request: pb.SubmitTasksRequest, context: Any
    ) -> pb.SubmitTasksResponse:
        return pb.SubmitTasksResponse(
            results=[pb.SubmitTaskResponse(accepted=True)] * len(request.attempts)
        )

    async def SubmitStream(
        self, requests: AsyncIterator[pb.SubmitTasksRequest], context: Any
    ) -> AsyncIterator[pb.SubmitTasksResponse]:
        self.stream_openings += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        yield pb.SubmitTasksResponse()


def test_a_worker_without_the_stream_is_handed_over_by_unary_calls(database_url):
    recorder = Recorder()

    async def scenario() -> list[AttemptRow]:
        def add(server: grpc.aio.Server) -> None:
            pb_grpc.add_WorkerServicer_to_server(OlderWorker(), server)

        async with grpc_server(add, interceptors=[recorder]) as address:
            return await hand_over(database_url, address)

    assert endings(asyncio.run(scenario())) == [("dispatched", None)] * 2
    assert [len(r.attempts) for r in recorder.requests("SubmitTasks")] == [2]


@pytest.mark.parametrize(("retry_after", "stream_openings"), [(60.0, 1), (0.0, 2)])
def test_a_worker_without_the_stream_is_asked_for_it_again_only_after_a_while(
    database_url, retry_after, stream_openings
):
    """Hand-overs to an older worker go by unary calls without asking for its stream each
    time; once the retry interval has passed the stream is tried again, so a worker upgraded
    in place gets back on it without a restart of the coordinator."""
    older, recorder = OlderWorker(), Recorder()
    settings = CoordinatorConfig(ListenAddress("127.0.0.1", 0), database_url, GrpcSecurity())

    async def scenario() -> list[AttemptRow]:
        def add(server: grpc.aio.Server) -> None:
            pb_grpc.add_WorkerServicer_to_server(older, server)

        async with (
            grpc_server(add, interceptors=[recorder]) as address,
            open_pool(database_url) as pool,
        ):
            claimed = await claim_for(pool, WORKER, address, 2)
            stubs = WorkerStubs(GrpcSecurity(), stream_retry_after=retry_after)
            dispatcher = Dispatcher(pool, settings, Wakeups(), stubs)
            try:
                for attempt in claimed:
                    await dispatcher.hand_over([attempt])
            finally:
                await stubs.close()
            return [await attempt_row(pool, c) for c in claimed]

    assert endings(asyncio.run(scenario())) == [("dispatched", None)] * 2
    assert older.stream_openings == stream_openings
    assert [len(r.attempts) for r in recorder.requests("SubmitTasks")] == [1, 1]


def test_hand_overs_in_flight_together_on_one_stream_get_their_own_answers(database_url, tmp_path):
    """The second of two hand-overs written to a one-slot worker is refused; each hand-over
    gets the answer to its own request, so the database agrees with what the worker holds."""
    settings = CoordinatorConfig(ListenAddress("127.0.0.1", 0), database_url, GrpcSecurity())
    with refusing_address() as coordinator:
        one_slot = worker_config(tmp_path, coordinator, slots=1)

        async def scenario() -> tuple[list[AttemptRow], set[tuple[str, int]]]:
            async with serving_worker(one_slot) as (live, address), open_pool(database_url) as pool:
                # A command that holds its slot until the end of the test.
                claimed = await claim_for(pool, WORKER, address, 2, "sleep 60")
                stubs = WorkerStubs(GrpcSecurity())
                dispatcher = Dispatcher(pool, settings, Wakeups(), stubs)
                try:
                    await asyncio.gather(*(dispatcher.hand_over([c]) for c in claimed))
                finally:
                    await stubs.close()
                rows = [await attempt_row(pool, c) for c in claimed]
                held = {
                    (str(c.task_id), c.attempt)
                    for c in claimed
                    if live.holds((str(c.task_id), c.attempt))
                }
                return rows, held

        rows, held = asyncio.run(scenario())
    assert sorted(endings(rows)) == [("dispatched", None), ("failed", "worker_refused")]
    assert held == {(str(r.task_id), r.attempt) for r in rows if r.status == "dispatched"}
