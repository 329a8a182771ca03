#!/usr/bin/env python3
"""skiplock's control-plane budget, measured per component in one sitting (`make bench`).

Runs, back to back on this machine:
  ceiling  COUNT `bash -c COMMAND` from a thread pool of `subprocess.Popen` at CEILING
           concurrency, output to a file each, no scheduler;
  drain    COUNT tasks submitted as fast as possible (one HTTP request per task, 8 in flight)
           to a fresh cluster (scheduler, COORDINATORS coordinators, WORKERS x SLOTS) on a
           fresh database, until the last one finished;
  batch    the same with POST /tasks/batch, BATCH_SIZE tasks a request;
  delay    an open loop at DELAY_RATE tasks/s (one request per task): start delay
           (started_at - scheduled_at, both server times) p50 / p99 / max, and early starts;
  steady   an open loop at STEADY_RATE tasks/s: each component's share of a core.

For each skiplock mode it prints tasks/s, the ratio to the ceiling, and CPU ms per task of the
scheduler, each coordinator, each worker (the worker process alone: the commands it ran are
its children and are shown apart) and PostgreSQL: the backends serving the benchmark's
database, found by pid (the server is shared; its background processes are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools import databases  # noqa: E402
from devtools.cluster import Cluster, ServiceProcess  # noqa: E402
from devtools.cpu import DatabaseBackends, machine_busy_seconds, process_cpu_seconds  # noqa: E402
from devtools.progress import on_terminal, phase  # noqa: E402
from scripts import spawn_baseline  # noqa: E402
from store.migrate import migrate  # noqa: E402

BENCHMARK = REPO_ROOT / "scripts" / "benchmark.py"
MODES = ("drain", "batch", "delay", "steady")
SAMPLE_INTERVAL_S = 0.5
# PostgreSQL backends publish their statistics at most once a second: wait this long for them.
STATS_SETTLE_S = 1.2


@dataclass
class ModeResult:
    mode: str
    submit: str  # "single": one POST per task
    tasks: int
    completed: int
    early_starts: int
    wall_s: float  # the load generator's whole run: first submission to last completion seen
    tasks_per_s: float
    start_delay_ms: dict[str, float] | None
    cpu_ms_per_task: dict[str, float] = field(default_factory=dict)
    # Commits and rollbacks in the benchmark's database (each autocommit statement is one).
    transactions_per_task: float = 0.0
    core_share: dict[str, float] = field(default_factory=dict)
    # The start delay split at the claim, from the database's own times (see DELAY_STAGES).
    delay_stages_ms: dict[str, float] | None = None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n")[0])
    parser.add_argument("-n", dest="count", type=int, default=1000,
                        help="tasks in the drain and commands in the ceiling (default: 1000)")
    parser.add_argument("--command", default="echo hello")
    parser.add_argument("--ceiling", type=int, default=4,
                        help="the ceiling's concurrency (default: 4)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--coordinators", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)} (default: all)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="tasks per POST /tasks/batch in the batch mode (default: 100)")
    parser.add_argument("--delay-rate", type=float, default=50.0)
    parser.add_argument("--delay-count", type=int, default=500)
    parser.add_argument("--steady-rate", type=float, default=100.0)
    parser.add_argument("--steady-count", type=int, default=1000)
    parser.add_argument("--output-root", type=Path, default=REPO_ROOT / "worker_output",
                        help="where the commands' output files go (default: worker_output/)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="sample every service with py-spy during each mode: collapsed "
                             "stacks in DIR/MODE-SERVICE.txt, and the top functions printed")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}")
    return args


# ---------------------------------------------------------------- CPU accounting


class Accounts:
    """CPU seconds per component between `open()` and `close()`, read from /proc."""

    def __init__(self, services: Sequence[ServiceProcess], backends: DatabaseBackends) -> None:
        self.services = services
        self.backends = backends
        self.spent: dict[str, float] = {}
        self.wall = 0.0
        self._before: dict[str, float] = {}
        self._wall0 = 0.0
        self._busy0 = 0.0

    def _now(self) -> dict[str, float]:
        used = {p.name: process_cpu_seconds(p.pid) for p in self.services}
        workers = [p for p in self.services if p.name.startswith("worker")]
        used["commands run"] = sum(process_cpu_seconds(p.pid, children=True) for p in workers)
        used["benchmark client"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + \
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
        return used

    def open(self) -> None:
        self.backends.sample()
        self._before = self._now()
        self._busy0 = machine_busy_seconds()[0]
        self._wall0 = time.monotonic()

    def close(self) -> None:
        self.wall = time.monotonic() - self._wall0
        busy = machine_busy_seconds()[0] - self._busy0
        self.backends.sample()
        after = self._now()
        self.spent = {name: after[name] - self._before[name] for name in after}
        self.spent["postgres (backends of the database)"] = self.backends.seconds()
        self.spent["everything else on the machine"] = max(0.0, busy - sum(self.spent.values()))


@contextmanager
def sampling(backends: DatabaseBackends) -> Iterator[None]:
    """Samples the database's backends every half second while the block runs."""
    done = threading.Event()

    def follow() -> None:
        while not done.wait(SAMPLE_INTERVAL_S):
            try:
                backends.sample()
            except psycopg.Error:
                continue

    thread = threading.Thread(target=follow, name="pg-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextmanager
def profiled(services: Sequence[ServiceProcess], out_dir: Path | None,
             mode: str) -> Iterator[None]:
    """py-spy (a dev requirement) samples each service while the block runs."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = [
        (p.name, subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(p.pid),
             "--rate", "200", "--format", "raw", "--nonblocking",
             "--output", str(out_dir / f"{mode}-{p.name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in services]
    try:
        yield
    finally:
        for _, spy in spies:
            spy.send_signal(signal.SIGINT)
        for _, spy in spies:
            spy.wait(timeout=30)
    for name, _ in spies:
        print_profile(out_dir / f"{mode}-{name}.txt", f"{mode} {name}")


def print_profile(path: Path, title: str, top: int = 12) -> None:
    """The functions with the most samples on top of the stack, and those most often on it."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"profile {title}: {total} samples")
    for frame, n in own.most_common(top):
        print(f"  self {100 * n / max(total, 1):5.1f}%  {frame}")
    for frame, n in inclusive.most_common(top * 2)[top // 2:]:
        print(f"  incl {100 * n / max(total, 1):5.1f}%  {frame}")


# ---------------------------------------------------------------- runs


def ceiling_rate(args: argparse.Namespace) -> float:
    config = spawn_baseline.Config(args.count, args.command, args.ceiling, None)
    with tempfile.TemporaryDirectory(prefix="ceiling-", dir=args.output_root) as out_dir:
        return spawn_baseline.spawn_threads(config, Path(out_dir)).rate(args.count)


def load(url: str, flags: Sequence[str], command: str) -> dict[str, Any]:
    """scripts/benchmark.py against the scheduler; its figures as JSON."""
    stderr = None if on_terminal() else subprocess.PIPE
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc = subprocess.run(
            [sys.executable, str(BENCHMARK), "-u", url, "-c", command, *flags,
             "--json", out.name],
            stdout=subprocess.PIPE, stderr=stderr, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stdout + (proc.stderr or ""), file=sys.stderr)
        figures: dict[str, Any] = json.loads(Path(out.name).read_text())
    return figures


def mode_flags(mode: str, args: argparse.Namespace) -> tuple[int, list[str]]:
    if mode == "drain":
        return args.count, ["-n", str(args.count), "-d", "0"]
    if mode == "batch":
        return args.count, ["-n", str(args.count), "-d", "0", "-b", str(args.batch_size)]
    if mode == "delay":
        return args.delay_count, ["-n", str(args.delay_count), "-d", "0",
                                  "-r", str(args.delay_rate), "-p", "16"]
    return args.steady_count, ["-n", str(args.steady_count), "-d", "0",
                               "-r", str(args.steady_rate), "-p", "16"]


def transactions(admin_url: str, dbname: str) -> int:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                           " WHERE datname = %s", (dbname,)).fetchone()
    return int(row[0]) if row else 0


# Where the start delay goes, split at the claim statement, p50 and p99 in ms: submit -> claim
# (scheduled_at, the insert's statement time, to the claim's statement time: commit, NOTIFY,
# wake-up) and claim -> start (the claim statement, the hand-over call and the worker's spawn,
# to started_at, the worker's clock on the same host). First attempts only.
DELAY_STAGES = """
SELECT 1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.to_claim)),
       1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.to_claim)),
       1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.to_start)),
       1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM d.to_start))
FROM (SELECT a.picked_at - t.scheduled_at AS to_claim, a.started_at - a.picked_at AS to_start
      FROM tasks t JOIN attempts a ON a.task_id = t.id AND a.attempt = 1
      WHERE a.started_at IS NOT NULL) d
"""


def delay_stages(url: str) -> dict[str, float] | None:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(DELAY_STAGES).fetchone()
    if row is None or row[0] is None:
        return None
    keys = ("to_claim_p50", "to_claim_p99", "claim_to_start_p50", "claim_to_start_p99")
    return {k: float(v) for k, v in zip(keys, row, strict=True)}


def run_mode(mode: str, admin_url: str, args: argparse.Namespace, log_dir: Path) -> ModeResult:
    """One mode on a fresh database."""
    with databases.throwaway_database(admin_url, "skiplock_bench_", migrate=migrate) as url:
        return measure_mode(mode, url, admin_url, args, log_dir)


def measure_mode(mode: str, url: str, admin_url: str, args: argparse.Namespace,
                 log_dir: Path) -> ModeResult:
    """One mode on a fresh cluster against the database at `url`."""
    count, flags = mode_flags(mode, args)
    dbname = conninfo_to_dict(url)["dbname"]
    cluster = Cluster(url, log_dir / mode, worker_output=log_dir / mode / "out")
    try:
        cluster.start(workers=args.workers, coordinators=args.coordinators,
                      slots=args.slots)
        accounts = Accounts(cluster.processes(), DatabaseBackends(admin_url, str(dbname)))
        time.sleep(STATS_SETTLE_S)
        xacts = transactions(admin_url, str(dbname))
        accounts.open()
        with sampling(accounts.backends), profiled(cluster.processes(), args.profile, mode):
            figures = load(cluster.scheduler_url, flags, args.command)
        accounts.close()
        time.sleep(STATS_SETTLE_S)
        xacts = transactions(admin_url, str(dbname)) - xacts
        stages = delay_stages(url) if mode in ("delay", "steady") else None
    finally:
        cluster.stop()
    delay = figures.get("start_delay_ms")
    return ModeResult(
        mode=mode, submit=f"{args.batch_size} a request" if mode == "batch" else "single",
        tasks=count, completed=int(figures["completed"]),
        early_starts=int(figures["early_starts"]),
        wall_s=float(figures["total_duration_s"]),
        tasks_per_s=float(figures["throughput_tasks_per_s"]),
        start_delay_ms=delay,
        cpu_ms_per_task={k: v * 1000 / count for k, v in accounts.spent.items()},
        core_share={k: v / accounts.wall for k, v in accounts.spent.items()},
        transactions_per_task=xacts / count,
        delay_stages_ms=stages,
    )


# ---------------------------------------------------------------- report


def control_plane_ms(result: ModeResult) -> float:
    cpu = result.cpu_ms_per_task
    return sum(v for k, v in cpu.items()
               if k.startswith(("scheduler", "coordinator", "postgres")))


def report(ceiling: float, results: list[ModeResult], args: argparse.Namespace) -> None:
    load1, load5, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load1:.2f} / {load5:.2f} (1 / 5 min)"
          f", {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"command {args.command!r}; skiplock: {args.coordinators} coordinator(s), "
          f"{args.workers} workers x {args.slots} slots")
    print(f"ceiling (Popen thread pool, c={args.ceiling}, {args.count} commands): "
          f"{ceiling:.1f} tasks/s")
    for r in results:
        print()
        head = f"{r.mode} ({r.submit} submission, {r.tasks} tasks"
        if r.mode in ("drain", "batch"):
            print(f"{head}): {r.tasks_per_s:.1f} tasks/s, ratio to the ceiling "
                  f"{r.tasks_per_s / ceiling:.2f}; completed {r.completed}, early {r.early_starts}")
        else:
            rate = args.delay_rate if r.mode == "delay" else args.steady_rate
            print(f"{head} at {rate:g}/s): completed {r.completed}, early {r.early_starts}")
        if r.start_delay_ms:
            d = r.start_delay_ms
            print(f"  start delay p50 / p99 / max: {d['p50']:.1f} / {d['p99']:.1f} / "
                  f"{d['max']:.1f} ms")
        if r.delay_stages_ms:
            g = r.delay_stages_ms
            print(f"    submit -> claim p50 / p99: {g['to_claim_p50']:.1f} / "
                  f"{g['to_claim_p99']:.1f} ms; claim -> start: {g['claim_to_start_p50']:.1f} / "
                  f"{g['claim_to_start_p99']:.1f} ms (database times: scheduled_at, the "
                  f"claim's picked_at, started_at)")
        print(f"  {'component':<38} {'CPU ms/task':>11} {'core share':>10}")
        for name, ms in r.cpu_ms_per_task.items():
            print(f"  {name:<38} {ms:>11.2f} {r.core_share[name]:>10.3f}")
        print(f"  {'control plane (scheduler+coord+pg)':<38} {control_plane_ms(r):>11.2f}")
        print(f"  PostgreSQL transactions per task (each autocommit statement is one; the "
              f"load's status polls and idle loops included): {r.transactions_per_task:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.output_root.mkdir(parents=True, exist_ok=True)
    server = databases.discover_server()
    try:
        phase(f"ceiling: {args.count} x {args.command!r} at c={args.ceiling}")
        ceiling = ceiling_rate(args)
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-", dir=args.output_root) as logs:
            for mode in args.modes:
                phase(f"{mode}: a fresh cluster and database")
                results.append(run_mode(mode, server.admin_url, args, Path(logs)))
    finally:
        server.close()
    report(ceiling, results, args)
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"ceiling_tasks_per_s": ceiling, "load_average": os.getloadavg(),
             "modes": [asdict(r) for r in results]}, indent=2) + "\n")
    failed = [r for r in results if r.completed != r.tasks or r.early_starts]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
