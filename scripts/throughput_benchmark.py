#!/usr/bin/env python3
"""skiplock's throughput as a share of the raw spawn ceiling, measured in the same sitting.

Each round runs, back to back on this machine:
  raw      COUNT `bash -c COMMAND` spawned directly at WORKERS x SLOTS concurrency, output to a
           file each, no scheduler: the faster of a thread pool and an event loop watching
           pidfds (scripts/spawn_baseline.py);
  skiplock `scripts/benchmark.sh -n COUNT -d 0 -c COMMAND` against a fresh cluster (scheduler,
           one coordinator, WORKERS workers x SLOTS slots) on a fresh database;
  latency  `scripts/benchmark.sh -n 300 -d 2 -r 20` against the same cluster: start delay
           (scheduled_at -> started_at) at light load, and early starts (must be 0).
and prints the ratio skiplock / raw per round, the median over the rounds, and the CPU each
service spent per task. A shared, noisy machine moves both figures; the ratio moves less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools import databases  # noqa: E402
from devtools.cluster import Cluster  # noqa: E402
from devtools.cpu import CpuSample, cpu_sample  # noqa: E402
from devtools.progress import on_terminal, phase  # noqa: E402
from scripts import spawn_baseline  # noqa: E402
from store.migrate import migrate  # noqa: E402

BENCHMARK = REPO_ROOT / "scripts" / "benchmark.sh"


@dataclass(frozen=True)
class Round:
    raw_per_s: float
    skiplock: dict[str, Any]
    latency: dict[str, Any]
    cpu_ms_per_task: dict[str, float]

    @property
    def ratio(self) -> float:
        return float(self.skiplock["throughput_tasks_per_s"]) / self.raw_per_s


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--command", default="echo hello")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--no-latency", action="store_true", help="skip the -d 2 -r 20 run")
    parser.add_argument("--output-root", type=Path, default=REPO_ROOT / "worker_output",
                        help="where the commands' output files go (default: worker_output/)")
    return parser.parse_args(argv)


def raw_spawn_rate(count: int, command: str, concurrency: int, out_root: Path) -> float:
    config = spawn_baseline.Config(count, command, concurrency, None)
    rates = []
    for method in (spawn_baseline.spawn_threads, spawn_baseline.spawn_pidfd):
        with tempfile.TemporaryDirectory(prefix="raw-", dir=out_root) as out_dir:
            rates.append(method(config, Path(out_dir)).rate(count))
    return max(rates)


def run_benchmark(url: str, args: Sequence[str]) -> dict[str, Any]:
    # On a terminal the benchmark's own progress shows through; otherwise its stderr is kept
    # for when it fails.
    stderr = None if on_terminal() else subprocess.PIPE
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc = subprocess.run([str(BENCHMARK), "-u", url, *args, "--json", out.name],
                              stdout=subprocess.PIPE, stderr=stderr, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stdout + (proc.stderr or ""), file=sys.stderr)
        figures: dict[str, Any] = json.loads(Path(out.name).read_text())
    return figures


def cpu_per_task(before: CpuSample, after: CpuSample, tasks: int) -> dict[str, float]:
    spent = {name: after.services[name] - before.services[name] for name in after.services}
    spent["postgres (all on the machine)"] = after.postgres - before.postgres
    spent.pop("this script", None)
    return {name: seconds * 1000 / tasks for name, seconds in spent.items()}


def one_round(admin_url: str, args: argparse.Namespace, log_dir: Path, label: str) -> Round:
    phase(f"{label}: raw spawn rate, {args.count} commands each way")
    raw = raw_spawn_rate(args.count, args.command, args.workers * args.slots, log_dir.parent)
    with databases.throwaway_database(admin_url, "skiplock_tput_", migrate=migrate) as url:
        cluster = Cluster(url, log_dir)
        try:
            phase(f"{label}: skiplock, {args.count} tasks")
            cluster.start(workers=args.workers, slots=args.slots)
            services = {p.name: p for p in cluster.processes()}
            before = cpu_sample(services)
            figures = run_benchmark(cluster.scheduler_url,
                                    ["-n", str(args.count), "-d", "0", "-c", args.command])
            cpu = cpu_per_task(before, cpu_sample(services), args.count)
            latency = {} if args.no_latency else run_benchmark(
                cluster.scheduler_url, ["-n", "300", "-d", "2", "-r", "20", "-c", args.command])
        finally:
            cluster.stop()
    return Round(raw, figures, latency, cpu)


def report(rounds: list[Round], args: argparse.Namespace) -> None:
    print(f"{args.count} x {args.command!r}, {args.workers} workers x {args.slots} slots")
    print("round  raw spawn/s  skiplock/s  ratio  completed  failed  "
          "start delay p95/max (ms, -d 2 -r 20)  early")
    for i, r in enumerate(rounds, 1):
        delay = r.latency.get("start_delay_ms") or {}
        early = r.latency.get("early_starts", "-")
        print(f"{i:>5}  {r.raw_per_s:>11.1f}  {r.skiplock['throughput_tasks_per_s']:>10.1f}  "
              f"{r.ratio:>5.2f}  {r.skiplock['completed']:>9}  {r.skiplock['failed']:>6}  "
              f"{delay.get('p95', float('nan')):>12.1f} / {delay.get('max', float('nan')):.1f}"
              f"{'':>19}{early}")
    print(f"median ratio: {statistics.median(r.ratio for r in rounds):.2f}")
    print("CPU per task (ms), median over rounds:")
    for name in rounds[0].cpu_ms_per_task:
        print(f"  {name}: {statistics.median(r.cpu_ms_per_task[name] for r in rounds):.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = databases.discover_server()
    try:
        # Output files of both runs go to the same directory tree: creating files costs very
        # different CPU on different file systems (on this machine /tmp costs 30x the repo's).
        with tempfile.TemporaryDirectory(prefix="tput-", dir=args.output_root) as logs:
            rounds = [one_round(server.admin_url, args, Path(logs) / f"round{i}",
                                f"round {i + 1}/{args.rounds}")
                      for i in range(args.rounds)]
    finally:
        server.close()
    report(rounds, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
