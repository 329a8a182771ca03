"""The worker's Reporter against a real coordinator service in this process (real gRPC, real
PostgreSQL): what it sends and in which order (output included), what it keeps while no
coordinator answers, and what it does with attempts the coordinator calls stale."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from common.grpc_security import GrpcSecurity
from proto import skiplock_pb2 as pb
from proto.timestamps import to_timestamp
from store import outputs, schedules, tasks
from tests.support.coordination import claim_for, serving_coordinator
from tests.support.inprocess import Recorder, eventually, refusing_address
from worker_svc import reporter as reporter_module
from worker_svc.coordinator_client import CoordinatorClient
from worker_svc.output import OutputFile
from worker_svc.reporter import Key, Reporter

WORKER = "worker-under-test"


@dataclass
class Setup:
    reporter: Reporter
    pool: AsyncConnectionPool
    recorder: Recorder
    stale: list[Key] = field(default_factory=list)

    def sent(self) -> list[list[tuple[Key, int]]]:
        """Each report batch the coordinator received, as (attempt, state) pairs."""
        return [
            [((r.ref.task_id, r.ref.attempt), r.state) for r in request.reports]
            for request in self.recorder.requests("ReportStream")
        ]

    async def dispatched_attempt(self) -> Key:
        """An attempt that is open and WORKER's to report on."""
        (claimed,) = await claim_for(self.pool, WORKER, "127.0.0.1:1")
        return (str(claimed.task_id), claimed.attempt)


@asynccontextmanager
async def reporting(database_url: str) -> AsyncIterator[Setup]:
    """A Reporter whose one coordinator is serving, with what that coordinator received."""
    recorder = Recorder()
    with refusing_address() as address:
        async with serving_coordinator(database_url, address, [recorder]) as pool:
            client = CoordinatorClient([address], GrpcSecurity())
            stale: list[Key] = []
            try:
                yield Setup(Reporter(client, WORKER, stale.append), pool, recorder, stale)
            finally:
                await client.close()


def report(
    key: Key, state: pb.AttemptState.ValueType, finished_at: datetime | None = None
) -> pb.StatusReport:
    return pb.StatusReport(
        ref=pb.AttemptRef(task_id=key[0], attempt=key[1]),
        worker_id=WORKER,
        state=state,
        finished_at=to_timestamp(finished_at),
    )


def unknown_attempt() -> Key:
    return (str(uuid.uuid4()), 1)


def test_a_final_report_replaces_an_undelivered_running_one_and_order_is_kept(database_url):
    first, second = unknown_attempt(), unknown_attempt()

    async def scenario() -> list[list[tuple[Key, int]]]:
        async with reporting(database_url) as setup:
            setup.reporter.add(report(first, pb.ATTEMPT_STATE_RUNNING))
            setup.reporter.add(report(second, pb.ATTEMPT_STATE_RUNNING))
            setup.reporter.add(report(first, pb.ATTEMPT_STATE_SUCCEEDED))
            assert setup.reporter.held() == {first, second}
            assert await setup.reporter.deliver_once()
            return setup.sent()

    assert asyncio.run(scenario()) == [
        [(first, pb.ATTEMPT_STATE_SUCCEEDED), (second, pb.ATTEMPT_STATE_RUNNING)]
    ]


def test_a_delivered_running_report_is_followed_by_the_final_one(database_url):
    async def scenario() -> None:
        async with reporting(database_url) as setup:
            key = await setup.dispatched_attempt()
            setup.reporter.add(report(key, pb.ATTEMPT_STATE_RUNNING))
            assert await setup.reporter.deliver_once()
            setup.reporter.add(report(key, pb.ATTEMPT_STATE_FAILED))
            assert await setup.reporter.deliver_once()
            assert not setup.reporter.has_pending() and setup.stale == []
            assert setup.sent() == [
                [(key, pb.ATTEMPT_STATE_RUNNING)], [(key, pb.ATTEMPT_STATE_FAILED)]
            ]
            async with setup.pool.connection() as conn:
                task = await tasks.get_task(conn, uuid.UUID(key[0]))
            assert task is not None and task.last_reason == "exit_code"

    asyncio.run(scenario())


def test_reports_are_kept_while_no_coordinator_answers_and_delivered_once_one_does(
    database_url,
):
    key = unknown_attempt()
    recorder = Recorder()

    async def scenario() -> None:
        with refusing_address() as address:
            client = CoordinatorClient([address], GrpcSecurity())
            reporter = Reporter(client, WORKER, lambda key: None)
            reporter.add(report(key, pb.ATTEMPT_STATE_SUCCEEDED))
            assert not await reporter.deliver_once()
            assert not await reporter.flush(0.3)
            assert reporter.held() == {key}
            stop = asyncio.Event()
            loop = asyncio.create_task(reporter.run(stop))
            async with serving_coordinator(database_url, address, [recorder]):
                await eventually(lambda: not reporter.has_pending(), 15, "the report delivered")
            stop.set()
            await loop
            await client.close()

    asyncio.run(scenario())
    assert [len(request.reports) for request in recorder.requests("ReportStream")] == [1]


def test_stale_attempts_are_stopped_and_their_reports_dropped(database_url):
    gone = unknown_attempt()

    async def scenario() -> None:
        async with reporting(database_url) as setup:
            current = await setup.dispatched_attempt()
            setup.reporter.add(report(gone, pb.ATTEMPT_STATE_RUNNING))
            setup.reporter.add(report(current, pb.ATTEMPT_STATE_RUNNING))
            assert await setup.reporter.deliver_once()
            assert setup.reporter.held() == set()
            assert setup.stale == [gone]
            assert setup.sent() == [
                [(gone, pb.ATTEMPT_STATE_RUNNING), (current, pb.ATTEMPT_STATE_RUNNING)]
            ]

    asyncio.run(scenario())


def test_an_attempt_ends_when_its_worker_saw_it_end_not_when_the_report_arrived(database_url):
    async def scenario() -> None:
        async with reporting(database_url) as setup:
            claimed = await claim_for(setup.pool, WORKER, "127.0.0.1:1", 3)
            keys = [(str(c.task_id), c.attempt) for c in claimed]
            finished = datetime.now(UTC)
            ahead = finished + timedelta(hours=1)  # a worker clock that runs ahead
            for key, at in zip(keys, [finished, ahead, None], strict=True):
                setup.reporter.add(report(key, pb.ATTEMPT_STATE_FAILED, at))
            async with setup.pool.connection() as conn:
                before = await schedules.database_now(conn)
            assert await setup.reporter.deliver_once()
            async with setup.pool.connection() as conn:
                after = await schedules.database_now(conn)
                rows = [await tasks.list_attempts(conn, uuid.UUID(k[0])) for k in keys]
                ended_tasks = [await tasks.get_task(conn, uuid.UUID(k[0])) for k in keys]
            ended = [attempt.ended_at for (attempt,) in rows]
            assert ended[0] == finished
            assert ended[1] is not None and before <= ended[1] <= after
            assert ended[2] is not None and before <= ended[2] <= after
            assert [t.failed_at for t in ended_tasks if t is not None] == ended
            assert [t.completed_at for t in ended_tasks if t is not None] == ended

    asyncio.run(scenario())


def output_file(tmp_path: Path, key: Key, data: bytes, cap: int = 4) -> tuple[OutputFile, int]:
    """The worker's OutputFile for `key` and a descriptor to append to the file with."""
    path = tmp_path / f"{key[0]}.log"
    path.write_bytes(data)
    return OutputFile(os.open(path, os.O_RDONLY), cap), os.open(path, os.O_WRONLY | os.O_APPEND)


async def stored_output(pool: AsyncConnectionPool, key: Key) -> tuple[bytes, int, bytes]:
    async with pool.connection() as conn:
        copy = await outputs.get_attempt_output(conn, uuid.UUID(key[0]), key[1])
    assert copy is not None and copy.head is not None and copy.tail is not None
    return copy.head, copy.tail_offset - len(copy.head), copy.tail


def test_an_attempts_last_output_travels_with_its_final_report(database_url, tmp_path):
    async def scenario() -> None:
        async with reporting(database_url) as setup:
            key = await setup.dispatched_attempt()
            output, writer = output_file(tmp_path, key, b"abcdefghij")
            setup.reporter.follow(key, output)
            setup.reporter.add(report(key, pb.ATTEMPT_STATE_RUNNING))
            setup.reporter.add(report(key, pb.ATTEMPT_STATE_SUCCEEDED))
            assert await setup.reporter.deliver_once()
            (request,) = setup.recorder.requests("ReportStream")
            assert [r.state for r in request.reports] == [pb.ATTEMPT_STATE_SUCCEEDED]
            assert [(d.head, d.tail, d.size) for d in request.outputs] == [(b"abcd", b"ghij", 10)]
            assert await stored_output(setup.pool, key) == (b"abcd", 2, b"ghij")
            os.write(writer, b"written after the end")
            os.close(writer)
            assert await setup.reporter.deliver_once()
            assert len(setup.recorder.requests("ReportStream")) == 1  # nothing left to send
            assert str(tmp_path / f"{key[0]}.log") not in open_files()  # closed once delivered

    asyncio.run(scenario())


def test_a_running_attempts_output_is_shipped_while_it_runs(database_url, tmp_path):
    async def scenario() -> None:
        async with reporting(database_url) as setup:
            key = await setup.dispatched_attempt()
            output, writer = output_file(tmp_path, key, b"ab", cap=100)
            setup.reporter.follow(key, output)
            stop = asyncio.Event()
            loop = asyncio.create_task(setup.reporter.run(stop))
            try:
                for more in (b"cd", b"ef"):
                    os.write(writer, more)
                    expected = (bytes(tmp_path.joinpath(f"{key[0]}.log").read_bytes()), 0, b"")
                    await eventually_stored(setup.pool, key, expected)
            finally:
                stop.set()
                await loop
                os.close(writer)
            assert all(not r.reports for r in setup.recorder.requests("ReportStream"))

    asyncio.run(scenario())


async def eventually_stored(
    pool: AsyncConnectionPool, key: Key, expected: tuple[bytes, int, bytes]
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (stored := await stored_output(pool, key)) != expected:
        assert loop.time() < deadline, f"stored {stored}, waiting for {expected}"
        await asyncio.sleep(0.05)


def open_files() -> set[str]:
    """What this process's file descriptors point to."""
    targets = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listdir itself used
            targets.add(os.readlink(f"/proc/self/fd/{fd}"))
    return targets


def test_the_loop_delivers_a_final_report_without_the_starts_that_are_not_due(
    database_url, monkeypatch
):
    """A start waits START_REPORT_DELAY even when another attempt's end goes now, so that a
    command ending within it is reported once; a shutdown's flush still takes it at once."""
    monkeypatch.setattr(reporter_module, "START_REPORT_DELAY", 3600.0)

    async def scenario() -> None:
        async with reporting(database_url) as setup:
            ended, running = unknown_attempt(), unknown_attempt()
            stop = asyncio.Event()
            loop = asyncio.create_task(setup.reporter.run(stop))
            try:
                setup.reporter.add(report(running, pb.ATTEMPT_STATE_RUNNING))
                setup.reporter.add(report(ended, pb.ATTEMPT_STATE_RUNNING))
                setup.reporter.add(report(ended, pb.ATTEMPT_STATE_SUCCEEDED))
                await eventually(lambda: ended not in setup.reporter.held(), 15, "a delivery")
                assert setup.sent() == [[(ended, pb.ATTEMPT_STATE_SUCCEEDED)]]
                assert setup.reporter.held() == {running}
            finally:
                stop.set()
                await loop
            assert await setup.reporter.flush(10.0)
            assert setup.sent()[1:] == [[(running, pb.ATTEMPT_STATE_RUNNING)]]

    asyncio.run(scenario())
