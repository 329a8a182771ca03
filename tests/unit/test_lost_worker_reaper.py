"""The coordinator's lost-worker reaper against real PostgreSQL: a pass ends the open attempts
of the workers it declares lost at once; those of workers declared lost elsewhere (by a
coordinator that died before ending them) are ended by the next sweep."""

from __future__ import annotations

import asyncio

from common.config import ListenAddress
from common.grpc_security import GrpcSecurity
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.recovery import reap_once
from coordinator_svc.wakeups import Wakeups
from tests.support.coordination import attempt_row, claim_for, open_pool

SILENCE = "UPDATE workers SET last_heartbeat_at = now() - interval '1 minute'"


def test_a_pass_ends_what_it_declared_lost_and_a_sweep_what_others_left(database_url):
    config = CoordinatorConfig(ListenAddress("127.0.0.1", 0), database_url, GrpcSecurity())

    async def scenario() -> list[list[object]]:
        async with open_pool(database_url) as pool:
            (left,) = await claim_for(pool, "left-lost", "127.0.0.1:9001")
            (silent,) = await claim_for(pool, "silent", "127.0.0.1:9002")
            seen: list[list[object]] = []

            async def reap(sweep: bool, before: str) -> None:
                async with pool.connection() as conn:
                    await conn.execute(before)
                ended = await reap_once(pool, config, Wakeups(), sweep=sweep)
                rows = [await attempt_row(pool, a) for a in (left, silent)]
                seen.append([ended, *(f"{r.status}/{r.reason}" for r in rows)])

            # Declared lost by another coordinator, which died before ending its attempt.
            await reap(False, f"{SILENCE}, lost_at = now() WHERE id = 'left-lost'")
            await reap(True, "SELECT 1")
            await reap(False, f"{SILENCE} WHERE id = 'silent'")
            return seen

    assert asyncio.run(scenario()) == [
        [0, "dispatched/None", "dispatched/None"],
        [1, "failed/worker_lost", "dispatched/None"],
        [1, "failed/worker_lost", "failed/worker_lost"],
    ]
