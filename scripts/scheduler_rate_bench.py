#!/usr/bin/env python3
"""The scheduler's own CPU per `POST /schedule` at a steady rate, the scheduler alone.

Each round starts a scheduler from each CHECKOUT in turn (A B A B ..., default: this one) on a
fresh database, sends 100 requests to warm it, then one `POST /schedule` per task, open loop,
at RATE a second for SECONDS (16 connections, aiohttp), and reads the scheduler's CPU from
/proc over exactly that window. No coordinator runs: the tasks stay queued. Prints CPU ms per
request and the share of a core per round, the medians, and each checkout's median ratio to
the first. `scripts/bench.py --modes steady` measures the same rate with the whole cluster
(and the benchmark's status polls) running beside it.

    .venv/bin/python scripts/scheduler_rate_bench.py --checkout /work/wt/base --checkout .
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import databases
from devtools.cluster import Cluster
from devtools.cpu import process_cpu_seconds

WARM_UP = 100
CONNECTIONS = 16
BODY = {"command": "echo hello"}


async def load(url: str, pid: int, rate: float, seconds: float) -> tuple[float, float]:
    """(CPU seconds, wall seconds) the scheduler spent on RATE x SECONDS requests."""
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def submit() -> None:
            async with session.post(url + "/schedule", json=BODY) as reply:
                await reply.read()
                if reply.status != 201:
                    raise RuntimeError(f"POST /schedule answered {reply.status}")

        for _ in range(WARM_UP):
            await submit()
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        count = int(rate * seconds)
        cpu, wall, start = process_cpu_seconds(pid), time.monotonic(), loop.time()
        sent = []
        for i in range(count):
            pause = start + i / rate - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            sent.append(asyncio.create_task(submit()))
        await asyncio.gather(*sent)
        return process_cpu_seconds(pid) - cpu, time.monotonic() - wall


def one_run(checkout: Path, rate: float, seconds: float, log_dir: Path) -> tuple[float, float]:
    """(CPU ms per request, share of a core) of a scheduler from `checkout`."""
    # Not migrated here: each scheduler migrates to the schema of its own checkout.
    with databases.throwaway_database(databases.LOCAL_URL, "skiplock_rate_") as url:
        cluster = Cluster(url, log_dir, cwd=checkout)
        try:
            scheduler = cluster.start_scheduler()
            cpu, wall = asyncio.run(load(cluster.scheduler_url, scheduler.pid, rate, seconds))
        finally:
            cluster.stop()
    return cpu * 1000 / int(rate * seconds), cpu / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", type=Path, help="repeat for A/B")
    parser.add_argument("-r", "--rate", type=float, default=100.0, help="requests a second")
    parser.add_argument("-s", "--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-root", help="where the scheduler's log goes (e.g. /dev/shm)")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkout or [Path(__file__).resolve().parent.parent]]
    per_request: dict[Path, list[float]] = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory(prefix="skiplock-rate-", dir=args.log_root) as tmp:
        for round_ in range(1, args.rounds + 1):
            for checkout in checkouts:
                ms, share = one_run(checkout, args.rate, args.seconds, Path(tmp) / str(round_))
                per_request[checkout].append(ms)
                print(
                    f"round {round_} {checkout}: {ms:.3f} ms per request, {share:.3f} of a "
                    f"core, load average {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    first = statistics.median(per_request[checkouts[0]])
    for checkout, figures in per_request.items():
        median = statistics.median(figures)
        print(f"median {checkout}: {median:.3f} ms per request ({median / first:.2f} of the first)")


if __name__ == "__main__":
    main()
