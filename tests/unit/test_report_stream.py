"""Reports on the ReportStream, against real coordinator services in this process (real gRPC,
real PostgreSQL): a batch whose answer is lost goes again to the next coordinator, a restarted
coordinator gets the next batch on a new stream, and a stopping coordinator ends idle streams."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from common.config import ListenAddress
from common.grpc_security import GrpcSecurity
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.service import CoordinatorService
from coordinator_svc.wakeups import Wakeups
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from store import tasks
from tests.support.coordination import claim_for, open_pool, serving_coordinator
from tests.support.inprocess import Recorder, grpc_server, refusing_address
from worker_svc.coordinator_client import CoordinatorClient
from worker_svc.reporter import Reporter

WORKER = "worker-under-test"


class DyingCoordinator(pb_grpc.CoordinatorServicer):
    """Takes a batch and never answers it; `taken` is set once it has one."""

    def __init__(self) -> None:
        self.received: list[pb.ReportStatusRequest] = []
        self.taken = asyncio.Event()

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse()

    async def ReportStatus(
        self, request: pb.ReportStatusRequest, context: Any
    ) -> pb.ReportStatusResponse:
        raise AssertionError("reports go on the stream")

    async def ReportStream(
        self, requests: AsyncIterator[pb.ReportStatusRequest], context: Any
    ) -> AsyncIterator[pb.ReportStatusResponse]:
        async for request in requests:
            self.received.append(request)
            self.taken.set()
            await asyncio.Event().wait()  # until the server dies
            yield pb.ReportStatusResponse()


class OlderCoordinator(pb_grpc.CoordinatorServicer):
    """A coordinator of a version without ReportStream: it takes reports by ReportStatus, and
    counts the streams it was asked to open."""

    def __init__(self) -> None:
        self.received: list[pb.ReportStatusRequest] = []
        self.stream_openings = 0

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse()

    async def ReportStatus(
        self, request: pb.ReportStatusRequest, context: Any
    ) -> pb.ReportStatusResponse:
        self.received.append(request)
        return pb.ReportStatusResponse()

    async def ReportStream(
        self, requests: AsyncIterator[pb.ReportStatusRequest], context: Any
    ) -> AsyncIterator[pb.ReportStatusResponse]:
        self.stream_openings += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        yield pb.ReportStatusResponse()


def succeeded(key: tuple[str, int]) -> pb.StatusReport:
    return pb.StatusReport(
        ref=pb.AttemptRef(task_id=key[0], attempt=key[1]),
        worker_id=WORKER,
        state=pb.ATTEMPT_STATE_SUCCEEDED,
        exit_code=0,
    )


async def task_status(pool: Any, key: tuple[str, int]) -> str | None:
    async with pool.connection() as conn:
        task = await tasks.get_task(conn, uuid.UUID(key[0]))
    return task.status if task else None


def test_a_coordinator_dying_with_a_batch_in_flight_loses_no_report(database_url):
    """The first coordinator takes the batch and dies before answering: the batch goes again,
    to the second coordinator, and the attempt's end is recorded."""
    dying, recorder = DyingCoordinator(), Recorder()

    async def scenario() -> str | None:
        with refusing_address() as survivor:
            async with serving_coordinator(database_url, survivor, [recorder]) as pool:
                (claimed,) = await claim_for(pool, WORKER, "127.0.0.1:1")
                key = (str(claimed.task_id), claimed.attempt)

                def add(server: grpc.aio.Server) -> None:
                    pb_grpc.add_CoordinatorServicer_to_server(dying, server)

                async with grpc_server(add) as victim:
                    client = CoordinatorClient([victim, survivor], GrpcSecurity())
                    reporter = Reporter(client, WORKER, lambda key: None)
                    reporter.add(succeeded(key))
                    delivery = asyncio.create_task(reporter.deliver_once())
                    await asyncio.wait_for(dying.taken.wait(), 10)
                # The victim has stopped, its stream with it.
                assert await asyncio.wait_for(delivery, 15)
                assert not reporter.has_pending()
                await client.close()
                return await task_status(pool, key)

    assert asyncio.run(scenario()) == "succeeded"
    [taken] = dying.received
    [again] = recorder.requests("ReportStream")
    assert again == taken


def test_a_restarted_coordinator_gets_the_next_batch_on_a_new_stream(database_url):
    first, second = Recorder(), Recorder()

    async def scenario() -> list[str | None]:
        with refusing_address() as address:
            client = CoordinatorClient([address], GrpcSecurity())
            reporter = Reporter(client, WORKER, lambda key: None)
            async with serving_coordinator(database_url, address, [first]) as pool:
                claimed = await claim_for(pool, WORKER, "127.0.0.1:1", 2)
                keys = [(str(c.task_id), c.attempt) for c in claimed]
                reporter.add(succeeded(keys[0]))
                assert await reporter.deliver_once()
            async with serving_coordinator(database_url, address, [second]) as pool:
                reporter.add(succeeded(keys[1]))
                assert await reporter.flush(10)
                statuses = [await task_status(pool, key) for key in keys]
            await client.close()
            return statuses

    assert asyncio.run(scenario()) == ["succeeded", "succeeded"]
    assert len(first.requests("ReportStream")) == 1
    assert len(second.requests("ReportStream")) == 1


def test_a_stopping_coordinator_ends_its_idle_streams(database_url):
    """So its shutdown does not wait out its grace for workers that keep a stream open."""
    config = CoordinatorConfig(ListenAddress("127.0.0.1", 0), database_url, GrpcSecurity())

    async def scenario() -> grpc.StatusCode:
        async with open_pool(database_url) as pool:
            service = CoordinatorService(pool, config, Wakeups())

            def add(server: grpc.aio.Server) -> None:
                pb_grpc.add_CoordinatorServicer_to_server(service, server)

            async with (
                grpc_server(add, caller_role="worker") as address,
                grpc.aio.insecure_channel(address) as channel,
            ):
                call = pb_grpc.CoordinatorStub(channel).ReportStream()
                await call.write(pb.ReportStatusRequest())
                assert await call.read() == pb.ReportStatusResponse()
                service.streams.stop()
                code: grpc.StatusCode = await asyncio.wait_for(call.code(), 10)
                return code

    assert asyncio.run(scenario()) == grpc.StatusCode.OK


@pytest.mark.parametrize(("retry_after", "asked_again"), [(60.0, False), (0.0, True)])
def test_a_coordinator_without_the_stream_gets_reports_by_unary_calls(retry_after, asked_again):
    """Reports to an older coordinator go by ReportStatus without asking for its stream each
    time; once the retry interval has passed the stream is tried again, so a coordinator
    upgraded in place gets back on it without a restart of the worker."""
    older = OlderCoordinator()
    batches = [pb.ReportStatusRequest(reports=[succeeded((str(uuid.uuid4()), 1))])
               for _ in range(2)]

    async def scenario() -> list[int]:
        def add(server: grpc.aio.Server) -> None:
            pb_grpc.add_CoordinatorServicer_to_server(older, server)

        async with grpc_server(add) as address:
            client = CoordinatorClient([address], GrpcSecurity(), stream_retry_after=retry_after)
            openings = []
            try:
                for batch in batches:
                    await client.report(batch, 10.0)
                    openings.append(older.stream_openings)
            finally:
                await client.close()
            return openings

    # A refusal can come back so fast that gRPC loses its status (INTERNAL): the client then
    # asks once more on a new stream, so a batch may open one or two.
    first, second = asyncio.run(scenario())
    assert older.received == batches
    assert first >= 1
    assert (second > first) == asked_again
