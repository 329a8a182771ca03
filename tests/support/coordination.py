"""For in-process tests that need the database: a coordinator's gRPC service and attempts
handed to a worker, made with the store's own statements."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import psycopg
from psycopg_pool import AsyncConnectionPool

from common import grpc_security
from common.config import ListenAddress
from common.grpc_security import GrpcSecurity
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.service import CoordinatorService
from coordinator_svc.wakeups import Wakeups
from proto import skiplock_pb2_grpc as pb_grpc
from store import dispatch, tasks
from store.db import in_transaction, make_pool
from store.models import AttemptRow, ClaimedAttempt, NewTask
from tests.support.inprocess import grpc_server


async def claim_for(
    pool: AsyncConnectionPool, worker_id: str, address: str, count: int = 1, command: str = "true"
) -> list[ClaimedAttempt]:
    """Register `worker_id` at `address` with `count` free slots, queue `count` tasks and claim
    them for it: their attempts 1 are open (`dispatched`) and the worker's."""

    async def work(conn: psycopg.AsyncConnection[Any]) -> list[ClaimedAttempt]:
        await dispatch.upsert_worker(conn, worker_id, address, count, False)
        new = [(uuid.uuid4(), NewTask(command, None, None)) for _ in range(count)]
        await tasks.insert_tasks(conn, new)
        claimed = (await dispatch.claim_for_free_slots(conn, 60.0, 0)).attempts
        assert len(claimed) == count and {c.worker_id for c in claimed} == {worker_id}
        return claimed

    return await in_transaction(pool, work)


@asynccontextmanager
async def open_pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = make_pool(database_url, 1, 4, "skiplock-test")
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


async def attempt_row(pool: AsyncConnectionPool, claimed: ClaimedAttempt) -> AttemptRow:
    async with pool.connection() as conn:
        rows = await tasks.list_attempts(conn, claimed.task_id)
    (row,) = [r for r in rows if r.attempt == claimed.attempt]
    return row


@asynccontextmanager
async def serving_coordinator(
    database_url: str,
    address: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    heartbeat_interval: float = 1.0,
) -> AsyncIterator[AsyncConnectionPool]:
    """A coordinator's gRPC service (without its background loops) on `address`; yields its
    connection pool."""
    config = CoordinatorConfig(
        ListenAddress("127.0.0.1", 0),
        database_url,
        GrpcSecurity(),
        heartbeat_interval=heartbeat_interval,
    )
    async with open_pool(database_url) as pool:

        def add(server: grpc.aio.Server) -> None:
            service = CoordinatorService(pool, config, Wakeups())
            pb_grpc.add_CoordinatorServicer_to_server(service, server)

        async with grpc_server(add, address, interceptors, caller_role=grpc_security.WORKER):
            yield pool
