#!/usr/bin/env python3
"""How fast the scheduler accepts tasks through POST /tasks/batch; prints figures (not a test).

A real scheduler process on a fresh database (no coordinator, so nothing is claimed meanwhile).
Each round submits, back to back:
  single: SINGLE tasks as one POST /schedule each, from 8 concurrent clients (the baseline);
  batch:  BATCHES batches of BATCH_SIZE tasks through POST /tasks/batch, one at a time;
  keyed:  the same with an idempotency key on every task.
Request bodies are encoded before the clock starts; the clock stops when the last answer is in
(every task committed). Figures are tasks accepted per second and the batch/single ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from devtools import databases  # noqa: E402
from devtools.cluster import Cluster  # noqa: E402
from store.migrate import migrate  # noqa: E402

HEADERS = {"content-type": "application/json"}


@contextmanager
def scheduler(admin_url: str) -> Iterator[str]:
    name = databases.unique_name("skiplock_batchbench_")
    url = databases.create_database(admin_url, name)
    cluster = Cluster(url, Path(tempfile.mkdtemp(prefix="skiplock-batchbench-")))
    try:
        migrate(url)
        cluster.start_scheduler()
        yield cluster.scheduler_url
    finally:
        cluster.stop()
        databases.drop_database(admin_url, name)


def single_rate(base: str, count: int) -> float:
    body = json.dumps({"command": "echo hello"}).encode()

    def post_many(n: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(n):
                response = client.post("/schedule", content=body, headers=HEADERS)
                response.raise_for_status()

    share = [count // 8 + (1 if i < count % 8 else 0) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        started = time.perf_counter()
        list(pool.map(post_many, share))
        return count / (time.perf_counter() - started)


def batch_rate(base: str, batches: int, size: int, keyed: bool) -> float:
    def body() -> bytes:
        tasks = []
        for i in range(size):
            task: dict[str, object] = {"command": f"echo hello {i}"}
            if keyed:
                task["idempotency_key"] = uuid.uuid4().hex
            tasks.append(task)
        return json.dumps({"tasks": tasks}).encode()

    bodies = [body() for _ in range(batches)]
    with httpx.Client(base_url=base, timeout=120) as client:
        started = time.perf_counter()
        for content in bodies:
            response = client.post("/tasks/batch", content=content, headers=HEADERS)
            response.raise_for_status()
            assert response.json()["created"] == size
        return batches * size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=10, help="batches per round")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=2_000, help="single requests per round")
    args = parser.parse_args()
    server = databases.discover_server()
    try:
        rows = []
        with scheduler(server.admin_url) as base:
            for round_no in range(1, args.rounds + 1):
                single = single_rate(base, args.single)
                batch = batch_rate(base, args.batches, args.batch_size, keyed=False)
                keyed = batch_rate(base, args.batches, args.batch_size, keyed=True)
                rows.append((single, batch, keyed))
                print(
                    f"round {round_no}: single {single:,.0f}/s  batch {batch:,.0f}/s "
                    f"({batch / single:.1f}x)  keyed batch {keyed:,.0f}/s ({keyed / single:.1f}x)",
                    flush=True,
                )
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        print(
            f"median: single {medians[0]:,.0f}/s  batch {medians[1]:,.0f}/s  "
            f"keyed batch {medians[2]:,.0f}/s  (batch size {args.batch_size})"
        )
    finally:
        server.close()


if __name__ == "__main__":
    main()
