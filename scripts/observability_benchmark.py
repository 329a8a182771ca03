#!/usr/bin/env python3
"""What metrics and logs cost, and whether retention keeps tables flat.

  cost       rounds of `scripts/benchmark.sh -n COUNT -d 0 -c COMMAND`, each on a fresh cluster
             (scheduler, one coordinator, WORKERS workers x SLOTS slots) on a fresh database,
             in pairs: observability on (JSON logs at info, one line per task transition;
             --metrics-port on coordinator and workers; every service's metrics scraped each
             second) and off (--log-level warning, no metrics port, nothing scraped), the order
             alternating. Prints tasks/s, the ratio on/off per pair, its median, and CPU ms per
             task of each service.
  once       one such run, `--observability on|off`, printing tasks/s: for an outside A/B timer.
  retention  one cluster with a short --retention under a steady load of RATE tasks/s (and a
             cron schedule firing every second) for DURATION seconds: the row counts of tasks,
             attempts, stored output and the tick ledger, sampled as the load goes on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common.ready import read_ready_file  # noqa: E402
from devtools import databases  # noqa: E402
from devtools.cluster import Cluster  # noqa: E402
from devtools.cpu import cpu_sample  # noqa: E402
from devtools.progress import phase  # noqa: E402
from scripts.throughput_benchmark import cpu_per_task, run_benchmark  # noqa: E402
from store.migrate import migrate  # noqa: E402

TABLES = ("tasks", "attempts", "attempt_outputs", "schedule_ticks")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", choices=["cost", "once", "retention"], default="cost")
    parser.add_argument("--observability", choices=["on", "off"], default="on")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--command", default="echo hello")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--retention", default="10s", help="--retention of the retention phase")
    parser.add_argument("--rate", type=float, default=40.0, help="tasks/s of the retention phase")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady load")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--output-root", type=Path, default=REPO_ROOT / "worker_output",
                        help="where the commands' output files go (default: worker_output/)")
    return parser.parse_args(argv)


class Scraper(threading.Thread):
    """Scrapes every metrics URL once a second, as Prometheus would (more often, even)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.stop = threading.Event()
        self.scrapes = 0

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.wait(1.0):
                for url in self.urls:
                    client.get(url).raise_for_status()
                    self.scrapes += 1


def start_cluster(url: str, log_dir: Path, args: argparse.Namespace, on: bool,
                  extra: Sequence[str] = ()) -> Cluster:
    env = {"SKIPLOCK_LOG_FORMAT": "json", "SKIPLOCK_LOG_LEVEL": "info" if on else "warning"}
    metrics = ["--metrics-port=0"] if on else []
    cluster = Cluster(url, log_dir, env=env)
    cluster.start_coordinator(extra_args=[*metrics, *extra])
    cluster.start_scheduler()
    for i in range(1, args.workers + 1):
        cluster.start_worker(f"worker-{i}", slots=args.slots, extra_args=metrics)
    return cluster


def metrics_urls(cluster: Cluster) -> list[str]:
    urls = [f"{cluster.scheduler_url}/metrics"]
    for proc in [*cluster.coordinators, *cluster.workers.values()]:
        assert proc.ready_file is not None and read_ready_file(proc.ready_file) is not None
        port = json.loads(proc.ready_file.read_text())["metrics_port"]
        urls.append(f"http://127.0.0.1:{port}/metrics")
    return urls


def one_run(admin_url: str, args: argparse.Namespace, log_dir: Path, on: bool) -> dict[str, Any]:
    with databases.throwaway_database(admin_url, "skiplock_obs_", migrate=migrate) as url:
        cluster = start_cluster(url, log_dir, args, on)
        scraper = Scraper(metrics_urls(cluster)) if on else None
        try:
            services = {p.name: p for p in cluster.processes()}
            if scraper is not None:
                scraper.start()
            before = cpu_sample(services)
            figures = run_benchmark(cluster.scheduler_url,
                                    ["-n", str(args.count), "-d", "0", "-c", args.command])
            cpu = cpu_per_task(before, cpu_sample(services), args.count)
        finally:
            if scraper is not None:
                scraper.stop.set()
                scraper.join()
            cluster.stop()
    return {"tasks_per_s": float(figures["throughput_tasks_per_s"]),
            "completed": figures["completed"], "cpu": cpu,
            "scrapes": scraper.scrapes if scraper else 0}


def cost(admin_url: str, args: argparse.Namespace, logs: Path) -> None:
    print(f"{args.count} x {args.command!r}, {args.workers} workers x {args.slots} slots")
    print("pair  on (tasks/s)  off (tasks/s)  ratio on/off  scrapes")
    ratios, runs = [], []
    for pair in range(args.pairs):
        order = [True, False] if pair % 2 == 0 else [False, True]
        result = {}
        for on in order:
            phase(f"pair {pair + 1}/{args.pairs}: observability {'on' if on else 'off'}")
            result[on] = one_run(admin_url, args, logs / f"pair{pair}-{on}", on)
        ratios.append(result[True]["tasks_per_s"] / result[False]["tasks_per_s"])
        runs.append(result)
        print(f"{pair + 1:>4}  {result[True]['tasks_per_s']:>12.1f}  "
              f"{result[False]['tasks_per_s']:>13.1f}  {ratios[-1]:>12.3f}  "
              f"{result[True]['scrapes']:>7}")
    print(f"median ratio on/off: {statistics.median(ratios):.3f}")
    print("CPU per task (ms), median over pairs: on / off")
    for name in runs[0][True]["cpu"]:
        values = [statistics.median(r[on]["cpu"][name] for r in runs) for on in (True, False)]
        print(f"  {name}: {values[0]:.2f} / {values[1]:.2f}")


def once(admin_url: str, args: argparse.Namespace, logs: Path) -> None:
    result = one_run(admin_url, args, logs / "once", args.observability == "on")
    print(f"observability {args.observability}: {result['tasks_per_s']:.1f} tasks/s, "
          f"{result['completed']} completed")


def counts(url: str) -> dict[str, int]:
    found = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            found[table] = int(row[0]) if row else 0
    return found


def retention(admin_url: str, args: argparse.Namespace, logs: Path) -> None:
    with databases.throwaway_database(admin_url, "skiplock_ret_", migrate=migrate) as url:
        cluster = start_cluster(url, logs / "retention", args, False,
                                [f"--retention={args.retention}", "--keep-ticks=5",
                                 "--prune-interval=1"])
        try:
            cluster.http.post("/schedules", json={"name": "every-second", "cron": "@every 1s",
                                                  "command": "true", "overlap": "allow"})
            print(f"--retention {args.retention}, --keep-ticks 5, {args.rate:g} tasks/s "
                  f"of {args.command!r} and a schedule firing every second, "
                  f"{args.workers} workers x {args.slots} slots")
            print(f"{'s':>5}  {'submitted':>9}  " + "  ".join(f"{t:>15}" for t in TABLES))
            submitted, started = 0, time.monotonic()
            next_sample = 0.0
            while (elapsed := time.monotonic() - started) < args.duration + 1e-9:
                due = int(elapsed * args.rate) - submitted
                for _ in range(max(due, 0)):
                    cluster.http.post("/schedule", json={"command": args.command})
                    submitted += 1
                if elapsed >= next_sample:
                    row = counts(url)
                    print(f"{elapsed:>5.0f}  {submitted:>9}  "
                          + "  ".join(f"{row[t]:>15}" for t in TABLES), flush=True)
                    next_sample += args.sample
                time.sleep(0.01)
        finally:
            cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = databases.discover_server()
    try:
        with tempfile.TemporaryDirectory(prefix="observe-", dir=args.output_root) as logs:
            {"cost": cost, "once": once, "retention": retention}[args.phase](
                server.admin_url, args, Path(logs))
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
