"""A worker's heartbeats against a real coordinator service in this process (real gRPC, real
PostgreSQL, real bash): it registers, follows the interval the coordinator owns, and stops
what the coordinator says is no longer its own."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proto import skiplock_pb2 as pb
from tests.support.coordination import serving_coordinator
from tests.support.inprocess import (
    Recorder,
    eventually,
    refusing_address,
    serving_worker,
    worker_config,
)
from worker_svc.process import Execution
from worker_svc.service import FIRST_HEARTBEAT_INTERVAL


@pytest.mark.parametrize(
    ("answered", "followed"), [(0.3, 0.3), (0.01, 0.05), (120.0, 60.0)]
)
def test_the_worker_follows_the_interval_its_coordinator_answers_with(
    database_url, db, tmp_path, answered, followed
):
    async def scenario() -> tuple[float, float]:
        with refusing_address() as address:
            config = worker_config(tmp_path, address)
            async with (
                serving_coordinator(database_url, address, heartbeat_interval=answered),
                serving_worker(config) as (worker, _),
            ):
                before = worker.heartbeat_interval
                await worker.heartbeat_once()
                return before, worker.heartbeat_interval

    assert asyncio.run(scenario()) == (FIRST_HEARTBEAT_INTERVAL, followed)
    assert db.execute("SELECT slots FROM workers").fetchall() == [(2,)]


def test_an_attempt_the_coordinator_revokes_is_stopped(database_url, tmp_path: Path):
    unknown = str(uuid.uuid4())

    recorder = Recorder()

    async def scenario() -> None:
        with refusing_address() as address:
            config = worker_config(tmp_path, address)
            async with (
                serving_coordinator(database_url, address, [recorder]),
                serving_worker(config) as (worker, _),
            ):
                execution = Execution(
                    unknown, 1, "sleep 100", None, worker.output_path(unknown, 1), None
                )
                worker.start(execution)
                await eventually(lambda: execution.started_at, message="the spawn")
                await worker.heartbeat_once()
                await eventually(lambda: not worker.executions, message="the revoked attempt")
                assert await worker.reporter.deliver_once()

    asyncio.run(scenario())
    [request] = recorder.requests("ReportStream")
    [final] = request.reports
    assert (final.state, final.exit_code) == (pb.ATTEMPT_STATE_CANCELLED, 128 + 15)
    assert final.finished_at.ToDatetime(UTC) <= datetime.now(UTC)
