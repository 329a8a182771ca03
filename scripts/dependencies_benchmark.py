#!/usr/bin/env python3
"""What task dependencies cost; prints figures (not a test).

1. The hot path without dependencies: the trigger that moves dependents
   (tasks_updated_dependents, migrations 015/017) runs after every UPDATE of tasks. 20,000 due
   tasks without `after` are claimed 200 at a time (store/dispatch.py) and each claim's
   attempts are ended as succeeded in one statement, as a coordinator does; microseconds per
   task (median over claims) with the trigger enabled for half the claims and disabled for
   the other half, which half first alternating by sitting, on a fresh database per sitting
   (JIT off, as on the services' pooled connections).
2. Ending a chain: a chain of N waiting tasks whose head's attempt fails; the statement that
   ends the head also ends every task of the chain. Milliseconds for N = 1,000 and 10,000, and
   the cost per task of the long chain as a ratio to the short one (1.0: linear).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402

from devtools import databases  # noqa: E402
from store import dependencies, dispatch  # noqa: E402
from store.db import NO_JIT  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.models import AttemptEnd  # noqa: E402
from store.vocabulary import AttemptStatus, EndReason  # noqa: E402

AConn = psycopg.AsyncConnection[Any]
TRIGGER = "tasks_updated_dependents"
INSERT = (
    "INSERT INTO tasks (id, command, scheduled_at, run_at)"
    " SELECT id, 'true', now(), now() FROM unnest(%s::uuid[]) AS id"
)
WORKER = (
    "INSERT INTO workers (id, address, slots, last_heartbeat_at)"
    " VALUES ('w1', '127.0.0.1:9001', 200, now())"
)


async def on_fresh_database(admin_url: str, work: Callable[[AConn], Awaitable[float]]) -> float:
    name = databases.unique_name("skiplock_bench_")
    url = databases.create_database(admin_url, name)
    try:
        migrate(url)
        async with await AConn.connect(url, autocommit=True) as conn:
            await conn.execute(NO_JIT)  # as on the services' pooled connections
            await conn.execute(WORKER)
            return await work(conn)
    finally:
        databases.drop_database(admin_url, name)


async def claim_and_end(conn: AConn, tasks: int, first: bool) -> tuple[float, float]:
    """Median seconds per task to claim 200 due tasks and end them, with the trigger enabled
    and disabled: the first half of the claims with the trigger as `first` says, the rest the
    other way (switched once, outside the clock: a switch makes every plan be made again)."""
    await conn.execute(INSERT, ([uuid.uuid4() for _ in range(tasks)],))
    await conn.execute("VACUUM ANALYZE tasks")
    rounds: dict[bool, list[float]] = {True: [], False: []}
    done = 0
    trigger = not first
    while True:
        if trigger != (first if done < tasks // 2 else not first):
            trigger = not trigger
            switch = "ENABLE" if trigger else "DISABLE"
            await conn.execute(f"ALTER TABLE tasks {switch} TRIGGER {TRIGGER}")
            await dispatch.claim_for_free_slots(conn, 60.0, 0)  # plans made again, unclocked
            await conn.execute("UPDATE attempts SET status = 'succeeded', ended_at = now()"
                               " WHERE ended_at IS NULL")  # fmt: skip
            await conn.execute("UPDATE worker_endings e SET ended_total = w.claimed_total"
                               " FROM workers w WHERE w.id = e.worker_id")
            await conn.execute("UPDATE tasks SET status = 'queued', worker_id = NULL,"
                               " picked_at = NULL WHERE status = 'dispatched'")  # fmt: skip
        started = time.perf_counter()
        claim = await dispatch.claim_for_free_slots(conn, 60.0, 0)
        ends = [
            AttemptEnd(a.task_id, a.attempt, AttemptStatus.SUCCEEDED, None) for a in claim.attempts
        ]
        await dispatch.end_attempts(conn, ends)
        spent = time.perf_counter() - started
        if not ends:
            break
        rounds[trigger].append(spent / len(ends))
        done += len(ends)
    return statistics.median(rounds[True]), statistics.median(rounds[False])


async def end_chain(conn: AConn, length: int) -> float:
    """Seconds for the statement that ends a chain's head to end the whole chain."""
    ids = [uuid.uuid4() for _ in range(length)]
    async with conn.transaction():
        await conn.execute(INSERT, (ids,))
        await dependencies.add_dependencies(conn, [(ids[i], ids[i - 1]) for i in range(1, length)])
    claim = await dispatch.claim_for_free_slots(conn, 60.0, 0)
    (attempt,) = claim.attempts
    end = AttemptEnd(attempt.task_id, attempt.attempt, AttemptStatus.FAILED, EndReason.EXIT_CODE)
    started = time.perf_counter()
    await dispatch.end_attempts(conn, [end])
    spent = time.perf_counter() - started
    cur = await conn.execute("SELECT count(*) FROM tasks WHERE last_reason = 'dependency_failed'")
    assert await cur.fetchone() == (length - 1,)
    return spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    server = databases.discover_server()
    admin = server.admin_url
    try:
        pairs = [
            await on_fresh_database(
                admin, functools.partial(claim_and_end, tasks=args.tasks, first=n % 2 == 0)
            )
            for n in range(args.rounds)
        ]
        on = statistics.median(p[0] for p in pairs)
        off = statistics.median(p[1] for p in pairs)
        print(f"claim + end per task, trigger on:  {on * 1e6:8.1f} us  (median of {args.rounds})")
        print(f"claim + end per task, trigger off: {off * 1e6:8.1f} us")
        print(f"ratio on/off: {on / off:.3f}")
        chains = {}
        for length in (1000, 10_000):
            chains[length] = statistics.median(
                [
                    await on_fresh_database(admin, functools.partial(end_chain, length=length))
                    for _ in range(3)
                ]
            )
            print(f"ending a chain of {length:6,}: {chains[length] * 1e3:8.1f} ms")
        per_task = (chains[10_000] / 10_000) / (chains[1000] / 1000)
        print(f"cost per task, 10,000 vs 1,000: {per_task:.2f}")
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
