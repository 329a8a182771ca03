#!/usr/bin/env python3
"""What the event stream (GET /events) costs, and whether a client keeps up with it.

Rounds of `scripts/benchmark.sh -n COUNT -d 0 -c COMMAND`, each on a fresh cluster (scheduler,
one coordinator, WORKERS workers x SLOTS slots) on a fresh database, in pairs: with the event
triggers (the default) and with them disabled, the order alternating from pair to pair. In the
runs with triggers one client reads GET /events throughout. Prints tasks/s and CPU ms per task
of each, the ratio with/without per pair and the median ratio, and for the reader: the events
and messages it got and the lag of the last event (its `at` to its arrival).
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
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools import databases  # noqa: E402
from devtools.cluster import Cluster  # noqa: E402
from devtools.cpu import cpu_sample  # noqa: E402
from devtools.progress import phase  # noqa: E402
from scripts.throughput_benchmark import cpu_per_task, run_benchmark  # noqa: E402
from store.migrate import migrate  # noqa: E402

EVENT_TRIGGERS = {
    "tasks": ("tasks_inserted_events", "tasks_updated_events"),
    "attempts": ("attempts_inserted_events", "attempts_updated_events"),
    "workers": ("workers_inserted_events", "workers_updated_events"),
    "schedule_ticks": ("schedule_ticks_inserted_events",),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--command", default="echo hello")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    return parser.parse_args(argv)


def disable_events(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table, triggers in EVENT_TRIGGERS.items():
            for trigger in triggers:
                conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")


class Reader(threading.Thread):
    """Reads GET /events until stopped: counts events and messages, and how late they came."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.events = 0
        self.messages = 0
        self.lags: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with (
            httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(60)) as client,
            client.stream("GET", "/events") as response,
        ):
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if not line.startswith("data:"):
                    continue
                batch = json.loads(line.removeprefix("data:"))
                arrived = time.time()
                self.messages += 1
                self.events += len(batch)
                last = datetime.fromisoformat(batch[-1]["at"]).timestamp()
                self.lags.append(arrived - last)


def one_run(
    admin_url: str, args: argparse.Namespace, log_dir: Path, events: bool
) -> dict[str, Any]:
    with databases.throwaway_database(admin_url, "skiplock_ev_", migrate=migrate) as url:
        if not events:
            disable_events(url)
        cluster = Cluster(url, log_dir)
        cluster.start(workers=args.workers, slots=args.slots)
        reader = Reader(cluster.scheduler_url) if events else None
        try:
            if reader:
                reader.start()
            services = {p.name: p for p in cluster.processes()}
            before = cpu_sample(services)
            started = time.monotonic()
            figures = run_benchmark(cluster.scheduler_url,
                                    ["-n", str(args.count), "-d", "0", "-c", args.command])
            cpu = cpu_per_task(before, cpu_sample(services), args.count)
            elapsed = time.monotonic() - started
            time.sleep(1)  # the last events reach the reader
        finally:
            if reader:
                reader.stop.set()
            cluster.stop()
    result: dict[str, Any] = {"tasks_per_s": float(figures["throughput_tasks_per_s"]),
                              "completed": figures["completed"], "cpu": cpu}
    if reader:
        lags = sorted(reader.lags) or [float("nan")]
        result["reader"] = (f"{reader.events} events in {reader.messages} messages "
                            f"({reader.events / elapsed:.0f} events/s); lag of each message's "
                            f"last event p50 {statistics.median(lags) * 1000:.0f} ms, "
                            f"max {lags[-1] * 1000:.0f} ms")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = databases.discover_server()
    try:
        with tempfile.TemporaryDirectory(prefix="events-bench-") as logs:
            print(f"{args.count} x {args.command!r}, {args.workers} workers x {args.slots} slots")
            print("pair  with events (tasks/s)  without (tasks/s)  ratio with/without")
            ratios, runs = [], []
            for pair in range(args.pairs):
                order = [True, False] if pair % 2 == 0 else [False, True]
                result = {}
                for events in order:
                    phase(f"pair {pair + 1}/{args.pairs}: events {'on' if events else 'off'}")
                    result[events] = one_run(server.admin_url, args,
                                             Path(logs) / f"pair{pair}-{events}", events)
                ratios.append(result[True]["tasks_per_s"] / result[False]["tasks_per_s"])
                runs.append(result)
                print(f"{pair + 1:>4}  {result[True]['tasks_per_s']:>21.1f}  "
                      f"{result[False]['tasks_per_s']:>17.1f}  {ratios[-1]:>19.3f}")
                print(f"      reader: {result[True]['reader']}")
            print(f"median ratio with/without: {statistics.median(ratios):.3f}")
            print("CPU per task (ms), median over pairs: with / without")
            for name in runs[0][True]["cpu"]:
                values = [statistics.median(r[on]["cpu"][name] for r in runs)
                          for on in (True, False)]
                print(f"  {name}: {values[0]:.2f} / {values[1]:.2f}")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
