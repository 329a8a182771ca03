"""Which claims are followed by a paced one: only a claim that left work behind (every slot
taken, or more due than it took) makes the next claim wait for CLAIM_INTERVAL; a task that
arrives alone is claimed at once. Decided on real claims against real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from coordinator_svc.dispatcher import left_behind
from store import dispatch, tasks
from store.db import in_transaction
from store.models import Claim, NewTask
from tests.support.coordination import open_pool

SLOTS = 4


async def claim_with_due(database_url: str, due: int, slots: int = SLOTS) -> Claim:
    """One worker with `slots` free slots, `due` tasks due now: the first claim."""
    async with open_pool(database_url) as pool:

        async def work(conn: psycopg.AsyncConnection[Any]) -> Claim:
            await dispatch.upsert_worker(conn, "worker-1", "127.0.0.1:1", slots, False)
            new = [(uuid.uuid4(), NewTask("true", None, None)) for _ in range(due)]
            if new:
                await tasks.insert_tasks(conn, new)
            return await dispatch.claim_for_free_slots(conn, 60.0, 0)

        return await in_transaction(pool, work)


@pytest.mark.parametrize(
    ("due", "slots", "behind"),
    [
        (0, SLOTS, False),  # nothing due: the next wake-up is claimed at once
        (1, SLOTS, False),  # a task alone, slots to spare
        (SLOTS - 1, SLOTS, False),
        (SLOTS, SLOTS, True),  # every slot taken: the next claim waits for freed ones
        (SLOTS + 3, SLOTS, True),  # more due than slots
        (1, 0, True),  # no free slot at all
    ],
)
def test_only_a_claim_that_left_work_behind_paces_the_next(database_url, due, slots, behind):
    claim = asyncio.run(claim_with_due(database_url, due, slots))
    assert len(claim.attempts) == min(due, slots)
    assert left_behind(claim) is behind
