#!/usr/bin/env python3
"""Throughput and start delay against the offered rate, as a chart (docs/rate_chart.png).

For each offered rate, a fresh cluster (scheduler, one coordinator, 2 workers x 4 slots) on a
fresh database takes SECONDS worth of one-off tasks at that rate (open loop, one HTTP request
per task, `make bench`'s steady mode); then one drain (as fast as the client submits) gives the
right-most point. Plotted: completed tasks/s, and start delay p50 / p99 (started_at -
scheduled_at, server times), beside the raw ceiling of the same sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools import databases  # noqa: E402
from devtools.progress import phase  # noqa: E402
from scripts import bench  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="25,50,100,150,200,300")
    parser.add_argument("--seconds", type=float, default=6.0, help="of load per rate")
    parser.add_argument("-n", dest="count", type=int, default=1000, help="tasks in the drain")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "rate_chart.png")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, object]:
    rates = [float(r) for r in args.rates.split(",")]
    points = []
    server = databases.discover_server()
    try:
        load_args = bench.parse_args(["-n", str(args.count)])
        phase(f"ceiling: {args.count} commands")
        ceiling = bench.ceiling_rate(load_args)
        with tempfile.TemporaryDirectory(prefix="chart-", dir=load_args.output_root) as logs:
            for rate in rates:
                phase(f"offered {rate:g} tasks/s for {args.seconds:g} s")
                load_args.steady_rate = rate
                load_args.steady_count = max(int(rate * args.seconds), 10)
                r = bench.run_mode("steady", server.admin_url, load_args,
                                   Path(logs) / f"rate{rate:g}")
                points.append({"offered": rate, "tasks_per_s": r.tasks_per_s,
                               "start_delay_ms": r.start_delay_ms, "early": r.early_starts})
            phase(f"drain: {args.count} tasks")
            r = bench.run_mode("drain", server.admin_url, load_args, Path(logs) / "drain")
            points.append({"offered": None, "tasks_per_s": r.tasks_per_s,
                           "start_delay_ms": r.start_delay_ms, "early": r.early_starts})
    finally:
        server.close()
    return {"ceiling_tasks_per_s": ceiling, "points": points, "load_average": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def plot(figures: dict[str, object], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = figures["points"]
    assert isinstance(points, list)
    steady = [p for p in points if p["offered"] is not None]
    drain = next(p for p in points if p["offered"] is None)
    offered = [p["offered"] for p in steady]
    top = max(offered) * 1.3
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(offered, [p["tasks_per_s"] for p in steady], "o-", label="skiplock, open loop")
    left.plot([0, top], [0, top], ":", color="grey", label="offered")
    left.scatter([top], [drain["tasks_per_s"]], marker="s", color="C3",
                 label=f"skiplock drain ({drain['tasks_per_s']:.0f}/s)")
    ceiling = float(figures["ceiling_tasks_per_s"])  # type: ignore[arg-type]
    left.axhline(ceiling, color="C2", linestyle="--",
                 label=f"raw ceiling, Popen c=4 ({ceiling:.0f}/s)")
    left.set_xlabel("offered tasks/s (one HTTP request per task)")
    left.set_ylabel("completed tasks/s")
    left.set_ylim(0, max(ceiling, drain["tasks_per_s"]) * 1.1)
    left.legend(fontsize=8)
    left.set_title("Throughput")
    for q, style in (("p50", "o-"), ("p99", "s--")):
        right.plot(offered, [p["start_delay_ms"][q] for p in steady], style, label=q)
    right.set_yscale("log")
    right.set_xlabel("offered tasks/s")
    right.set_ylabel("start delay, ms (started_at - scheduled_at)")
    right.legend(fontsize=8)
    right.set_title("Start delay (never early)")
    load = figures["load_average"]
    fig.suptitle(f"skiplock, 2 workers x 4 slots, `bash -c 'echo hello'`; 2 cores, "
                 f"load average {load[0]:.1f} at the end; {figures['date']}",  # type: ignore[index]
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures = measure(args)
    for p in figures["points"]:  # type: ignore[attr-defined]
        d = p["start_delay_ms"] or {}
        offered = "drain" if p["offered"] is None else f"{p['offered']:g}/s"
        print(f"offered {offered:>7}: {p['tasks_per_s']:6.1f} tasks/s, start delay p50 "
              f"{d.get('p50', 0):.1f} p99 {d.get('p99', 0):.1f} ms, early {p['early']}")
    print(f"ceiling {figures['ceiling_tasks_per_s']:.1f} tasks/s; chart: {args.output}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    plot(figures, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
