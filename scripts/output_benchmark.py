#!/usr/bin/env python3
"""What keeping commands' output in PostgreSQL costs, and how far behind a follower reads it.

  cost    rounds of `scripts/benchmark.sh -n COUNT -d 0 -c COMMAND`, each on a fresh cluster
          (scheduler, one coordinator, WORKERS workers x SLOTS slots) on a fresh database, in
          pairs: workers that keep output (--output-cap-bytes 65536, the default) and workers
          that keep none (--output-cap-bytes 0), the order alternating from pair to pair.
          Prints tasks/s and CPU ms per task of each, the ratio with/without per pair and the
          median ratio.
  follow  one command printing the time every 0.1 s for LINES lines, read through
          GET /tasks/{id}/output?follow=true: for each line, how long after it was written the
          follower received it (p50 / p95 / max), on the same clock.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common.output import DEFAULT_OUTPUT_CAP_BYTES  # noqa: E402
from devtools import databases  # noqa: E402
from devtools.cluster import Cluster  # noqa: E402
from devtools.cpu import cpu_sample  # noqa: E402
from devtools.progress import phase  # noqa: E402
from scripts.throughput_benchmark import cpu_per_task, run_benchmark  # noqa: E402
from store.migrate import migrate  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", choices=["cost", "follow", "all"], default="all")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--command", default="echo hello")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--output-root", type=Path, default=REPO_ROOT / "worker_output",
                        help="where the commands' output files go (default: worker_output/)")
    return parser.parse_args(argv)


def start_cluster(url: str, log_dir: Path, args: argparse.Namespace, cap: int) -> Cluster:
    cluster = Cluster(url, log_dir)
    cluster.start_coordinator()
    cluster.start_scheduler()
    for i in range(1, args.workers + 1):
        cluster.start_worker(f"worker-{i}", slots=args.slots,
                             extra_args=[f"--output-cap-bytes={cap}"])
    return cluster


def one_run(admin_url: str, args: argparse.Namespace, log_dir: Path, cap: int) -> dict[str, Any]:
    with databases.throwaway_database(admin_url, "skiplock_out_", migrate=migrate) as url:
        cluster = start_cluster(url, log_dir, args, cap)
        try:
            services = {p.name: p for p in cluster.processes()}
            before = cpu_sample(services)
            figures = run_benchmark(cluster.scheduler_url,
                                    ["-n", str(args.count), "-d", "0", "-c", args.command])
            cpu = cpu_per_task(before, cpu_sample(services), args.count)
        finally:
            cluster.stop()
    return {"tasks_per_s": float(figures["throughput_tasks_per_s"]),
            "completed": figures["completed"], "cpu": cpu}


def cost(admin_url: str, args: argparse.Namespace, logs: Path) -> None:
    print(f"{args.count} x {args.command!r}, {args.workers} workers x {args.slots} slots")
    print("pair  with (tasks/s)  without (tasks/s)  ratio with/without")
    ratios, runs = [], []
    for pair in range(args.pairs):
        caps = [DEFAULT_OUTPUT_CAP_BYTES, 0] if pair % 2 == 0 else [0, DEFAULT_OUTPUT_CAP_BYTES]
        result = {}
        for cap in caps:
            phase(f"pair {pair + 1}/{args.pairs}: --output-cap-bytes={cap}, {args.count} tasks")
            result[cap] = one_run(admin_url, args, logs / f"pair{pair}-cap{cap}", cap)
        with_, without = result[DEFAULT_OUTPUT_CAP_BYTES], result[0]
        ratios.append(with_["tasks_per_s"] / without["tasks_per_s"])
        runs.append(result)
        print(f"{pair + 1:>4}  {with_['tasks_per_s']:>14.1f}  {without['tasks_per_s']:>17.1f}  "
              f"{ratios[-1]:>18.3f}")
    print(f"median ratio with/without: {statistics.median(ratios):.3f}")
    print("CPU per task (ms), median over pairs: with / without")
    for name in runs[0][0]["cpu"]:
        values = [statistics.median(r[cap]["cpu"][name] for r in runs)
                  for cap in (DEFAULT_OUTPUT_CAP_BYTES, 0)]
        print(f"  {name}: {values[0]:.2f} / {values[1]:.2f}")


def follow(admin_url: str, args: argparse.Namespace, logs: Path) -> None:
    command = f"for i in $(seq 1 {args.lines}); do date +%s.%N; sleep 0.1; done"
    phase(f"follow: {args.lines} lines, one every 0.1 s")
    with databases.throwaway_database(admin_url, "skiplock_out_", migrate=migrate) as url:
        cluster = start_cluster(url, logs / "follow", args, DEFAULT_OUTPUT_CAP_BYTES)
        try:
            task_id = cluster.http.post("/schedule", json={"command": command}).json()["task_id"]
            lags = read_lags(cluster.scheduler_url, task_id)
        finally:
            cluster.stop()
    lags.sort()
    print(f"follow: {len(lags)} lines written every 0.1 s; received after "
          f"p50 {statistics.median(lags) * 1000:.0f} ms, "
          f"p95 {lags[int(0.95 * (len(lags) - 1))] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")


def read_lags(base_url: str, task_id: str) -> list[float]:
    """For each line (a time stamp), the time between its writing and its arrival here."""
    lags, pending = [], b""
    with httpx.Client(base_url=base_url, timeout=60) as client, client.stream(
        "GET", f"/tasks/{task_id}/output", params={"follow": "true"}
    ) as response:
        for chunk in response.iter_bytes():
            arrived = time.time()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            lags += [arrived - float(line) for line in lines if line]
    return lags


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = databases.discover_server()
    try:
        with tempfile.TemporaryDirectory(prefix="output-", dir=args.output_root) as logs:
            if args.phase in ("cost", "all"):
                cost(server.admin_url, args, Path(logs))
            if args.phase in ("follow", "all"):
                follow(server.admin_url, args, Path(logs))
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
