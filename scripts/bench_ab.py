#!/usr/bin/env python3
"""`make bench` sittings of two checkouts in turn (A B A B ...), and the median of the pairwise
ratios B / A per mode and component: on a shared, noisy machine a ratio between neighbouring
sittings says more than either figure alone.

  .venv/bin/python scripts/bench_ab.py --pairs 3 /path/to/checkout-A /path/to/checkout-B

Each checkout runs its own scripts/bench.py with its own virtualenv (`.venv` in it, with the
generated protobuf code: `make proto`); flags after `--` go to both. Outputs go to a tmpfs
directory by default, so the file system's cost of creating files is not in the workers'
figures (see docs/PERFORMANCE.md). Each sitting's JSON is kept in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Sitting = dict[str, Any]
Mode = dict[str, Any]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout_a", type=Path)
    parser.add_argument("checkout_b", type=Path)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-ab"))
    parser.add_argument("--output-root", type=Path, default=Path("/dev/shm/bench-ab"))
    parser.add_argument("bench_args", nargs="*", help="after --: flags for scripts/bench.py")
    return parser.parse_args(argv)


def sitting(checkout: Path, json_path: Path, output_root: Path, flags: Sequence[str]) -> Sitting:
    output_root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(checkout / ".venv/bin/python"), "scripts/bench.py", "--json", str(json_path),
         "--output-root", str(output_root), *flags],
        cwd=checkout, stdout=subprocess.DEVNULL, check=True)
    result: Sitting = json.loads(json_path.read_text())
    return result


def cpu(prefix: str) -> Callable[[Sitting, Mode], float]:
    """CPU ms per task of every component whose name starts with prefix (both workers, say)."""
    return lambda _, mode: sum(
        v for k, v in mode["cpu_ms_per_task"].items() if k.startswith(prefix))


def delay(quantile: str) -> Callable[[Sitting, Mode], float]:
    return lambda _, mode: float((mode["start_delay_ms"] or {}).get(quantile, 0.0))


FIGURES: dict[str, Callable[[Sitting, Mode], float]] = {
    "tasks/s": lambda _, mode: float(mode["tasks_per_s"]),
    "ratio to ceiling": lambda s, mode: mode["tasks_per_s"] / s["ceiling_tasks_per_s"],
    "scheduler ms": cpu("scheduler"),
    "coordinator ms": cpu("coordinator"),
    "workers ms": cpu("worker"),
    "postgres ms": cpu("postgres"),
    "control plane ms": lambda s, mode: sum(
        cpu(p)(s, mode) for p in ("scheduler", "coordinator", "postgres")),
    "transactions/task": lambda _, mode: float(mode["transactions_per_task"]),
    "delay p50 ms": delay("p50"),
    "delay p99 ms": delay("p99"),
}


def mode_of(s: Sitting, name: str) -> Mode:
    return next(m for m in s["modes"] if m["mode"] == name)


def report(a: list[Sitting], b: list[Sitting]) -> None:
    print(f"ceilings, tasks/s: A {[round(s['ceiling_tasks_per_s']) for s in a]}"
          f", B {[round(s['ceiling_tasks_per_s']) for s in b]}")
    for name in (m["mode"] for m in a[0]["modes"]):
        print(f"{name}: median A, median B, median of pairwise B / A (each pair)")
        for label, figure in FIGURES.items():
            fa = [figure(s, mode_of(s, name)) for s in a]
            fb = [figure(s, mode_of(s, name)) for s in b]
            ratios = [y / x for x, y in zip(fa, fb, strict=True) if x]
            median_ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
            print(f"  {label:18} {statistics.median(fa):9.2f} {statistics.median(fb):9.2f}"
                  f"  {median_ratio} ({', '.join(f'{r:.2f}' for r in ratios)})")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[Sitting]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        for tag, checkout in (("A", args.checkout_a), ("B", args.checkout_b)):
            started = time.strftime("%H:%M:%S", time.gmtime())
            load = Path("/proc/loadavg").read_text().split()[0]
            print(f"{tag}{pair}: {checkout} from {started} UTC, load {load}", file=sys.stderr)
            runs[tag].append(sitting(checkout.resolve(), args.out / f"{tag}{pair}.json",
                                     args.output_root / tag, args.bench_args))
    report(runs["A"], runs["B"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
