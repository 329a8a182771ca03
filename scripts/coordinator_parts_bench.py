#!/usr/bin/env python3
"""Parts of the coordinator's CPU per task, each measured alone (docs/PERFORMANCE.md, "The
coordinator's CPU per task"). Run it in two checkouts, in turn, to compare them.

  logs     the transition lines and metrics of one task (dispatched, then ended with its start
           learnt from the ending), the services' log configuration writing to a file: µs/task
  pool     one checkout and return of a pooled connection (the services' pool): µs
  convert  psycopg's conversion of the claim and the ending statements, as executing them
           does it: µs each
  outputs  building and converting the merge of output deltas for execution, a batch of 1 and
           of 10 deltas of a short line each (the report batch's usual sizes): µs per batch
  cron     the cron loop alone with no schedule, its poll interval 0.05 s so that rounds add
           up: CPU µs per idle round (one a second at the default interval)
  idle     an idle cluster (1 coordinator, 2 workers x 4 slots, scheduler): the coordinator's
           CPU per second of its background loops and the workers' heartbeats: ms/s
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def best_us(fn: Callable[[], None], number: int) -> float:
    """CPU µs per call, the best of 5 rounds."""
    rounds = timeit.repeat(fn, number=number, repeat=5, timer=time.process_time)
    return min(rounds) / number * 1e6


def bench_logs(fmt: str) -> float:
    from common import logs
    from coordinator_svc import transitions
    from store.models import ClaimedAttempt, EndedAttempt

    with tempfile.NamedTemporaryFile(dir="/dev/shm") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            logs.configure("coordinator", logs.LogSettings(fmt, "info"))
            now = datetime.now(UTC)
            claimed = ClaimedAttempt(
                uuid.uuid4(), 1, "echo hello", None, now, "worker-1", "127.0.0.1:1", None, {},
                None, [0], None, None, None, None,
            )  # fmt: skip
            ended = EndedAttempt(
                claimed.task_id, 1, "worker-1", None, "succeeded", None, 0,
                now + timedelta(milliseconds=3), now + timedelta(milliseconds=5), "succeeded",
                now, True,
            )  # fmt: skip

            def task() -> None:
                transitions.handed_over([claimed])
                transitions.ended([ended])

            return best_us(task, 5000)
        finally:
            os.dup2(saved, 2)


def bench_convert() -> dict[str, float]:
    from psycopg._queries import PostgresQuery
    from psycopg.adapt import Transformer

    import store.db  # noqa: F401  (the services' settings)
    from store import dispatch

    transformer = Transformer()
    times = {}
    for name in ("CLAIM_FOR_FREE_SLOTS", "END_ATTEMPTS", "END_ATTEMPTS_AND_OUTPUTS"):
        statement = getattr(dispatch, name)
        names = {p.split(")")[0] for p in statement.split("%(")[1:]}
        params = dict.fromkeys(names, 1)

        def convert(statement: str = statement, params: dict[str, int] = params) -> None:
            PostgresQuery(transformer).convert(statement, params)

        times[name] = best_us(convert, 2000)
    return times


def bench_outputs() -> dict[int, float]:
    from psycopg._queries import PostgresQuery
    from psycopg.adapt import Transformer

    import store.db  # noqa: F401  (the services' settings)
    from store import outputs
    from store.models import OutputDelta

    transformer = Transformer()
    times = {}
    for count in (1, 10):
        deltas = [
            OutputDelta(uuid.uuid4(), 1, "worker-1", 0, b"hello\n", 6, b"", 6, 4096)
            for _ in range(count)
        ]

        def convert(deltas: list[OutputDelta] = deltas) -> None:
            PostgresQuery(transformer).convert(outputs.MERGE_OUTPUTS, outputs.output_params(deltas))

        times[count] = best_us(convert, 2000)
    return times


async def bench_pool(url: str) -> float:
    from store.db import make_pool

    pool = make_pool(url, 1, 2, "skiplock-bench")
    await pool.open(wait=True)
    try:
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(2000):
                async with pool.connection():
                    pass
            best = min(best, (time.process_time() - start) / 2000 * 1e6)
        return best
    finally:
        await pool.close()


def bench_cron(seconds: float) -> float:
    from types import SimpleNamespace

    import uvloop

    from coordinator_svc import cron
    from coordinator_svc.wakeups import Wakeups
    from devtools import databases
    from store.db import make_pool
    from store.migrate import migrate

    async def run(url: str) -> float:
        rounds = 0
        asked = cron.next_fire_delay

        async def counted(pool: object, cap: float) -> float:  # once per idle round, either way
            nonlocal rounds
            rounds += 1
            return await asked(pool, cap)  # type: ignore[arg-type]

        cron.next_fire_delay = counted  # type: ignore[assignment]
        pool = make_pool(url, 1, 2, "skiplock-bench")
        await pool.open(wait=True)
        try:
            stop = asyncio.Event()
            config = SimpleNamespace(poll_interval=0.05)
            loop = asyncio.create_task(cron.cron_loop(pool, config, Wakeups(), stop))  # type: ignore[arg-type]
            await asyncio.sleep(1)
            cpu, counted_rounds = time.process_time(), rounds
            await asyncio.sleep(seconds)
            cpu, counted_rounds = time.process_time() - cpu, rounds - counted_rounds
            stop.set()
            await loop
            return cpu / counted_rounds * 1e6
        finally:
            await pool.close()

    server = databases.discover_server()
    try:
        prefix = "skiplock_cron_"
        with databases.throwaway_database(server.admin_url, prefix, migrate=migrate) as url:
            return uvloop.run(run(url))
    finally:
        server.close()


def bench_idle(seconds: float) -> float:
    from devtools import databases
    from devtools.cluster import Cluster
    from devtools.cpu import process_cpu_seconds
    from store.migrate import migrate

    server = databases.discover_server()
    try:
        with (
            databases.throwaway_database(server.admin_url, "skiplock_idle_", migrate=migrate)
            as url,
            tempfile.TemporaryDirectory(dir="/dev/shm") as logs,
        ):
            cluster = Cluster(url, Path(logs), worker_output=Path(logs) / "out")
            try:
                cluster.start(workers=2, coordinators=1, slots=4)
                time.sleep(4)  # startup done, heartbeats flowing
                pid = cluster.coordinators[0].pid
                cpu, wall = process_cpu_seconds(pid), time.monotonic()
                time.sleep(seconds)
                cpu, wall = process_cpu_seconds(pid) - cpu, time.monotonic() - wall
                return 1000 * cpu / wall
            finally:
                cluster.stop()
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "parts", nargs="*", default=["logs", "pool", "convert", "outputs", "cron", "idle"]
    )
    parser.add_argument("--idle-seconds", type=float, default=15.0)
    parser.add_argument("--cron-seconds", type=float, default=10.0)
    # One per run: structlog keeps the configuration a logger was first used with.
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args()
    if "logs" in args.parts:
        print(f"logs ({args.log_format}): {bench_logs(args.log_format):.1f} µs per task")
    if "convert" in args.parts:
        for name, us in bench_convert().items():
            print(f"convert {name}: {us:.1f} µs")
    if "outputs" in args.parts:
        for count, us in bench_outputs().items():
            print(f"outputs, {count} deltas: {us:.1f} µs")
    if "pool" in args.parts:
        from devtools import databases

        server = databases.discover_server()
        try:
            print(f"pool checkout and return: {asyncio.run(bench_pool(server.admin_url)):.1f} µs")
        finally:
            server.close()
    if "cron" in args.parts:
        print(f"idle cron round: {bench_cron(args.cron_seconds):.0f} µs CPU")
    if "idle" in args.parts:
        print(f"idle coordinator: {bench_idle(args.idle_seconds):.2f} ms CPU per second")


if __name__ == "__main__":
    main()
