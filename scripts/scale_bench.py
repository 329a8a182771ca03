#!/usr/bin/env python3
"""Coordinator scale-out and a database with history, each measured in one sitting.

  coordinators  COUNT tasks running `true` (so the control plane is what is measured) are
                inserted straight into a fresh database (one INSERT ... SELECT, no scheduler
                in the way), then 1, 2 and 4 coordinators and WORKERS x SLOTS workers dialing
                all of them drain them: tasks/s from the first pick to the last completion
                (database times), and each coordinator's share.
  history       `make bench`'s drain and start-delay modes against an empty database and
                against one holding HISTORY finished tasks with their attempts, outputs and
                schedule ticks (loaded with generate_series), alternating.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools import databases  # noqa: E402
from devtools.cluster import Cluster  # noqa: E402
from devtools.cpu import process_cpu_seconds  # noqa: E402
from devtools.progress import phase  # noqa: E402
from scripts import bench  # noqa: E402
from store.migrate import migrate  # noqa: E402

# COUNT queued tasks due now, one statement.
PREFILL = """
INSERT INTO tasks (id, command, scheduled_at, run_at)
SELECT gen_random_uuid(), %(command)s, now(), now() FROM generate_series(1, %(count)s)
"""

# HISTORY finished tasks spread over the last six days (inside the default retention of 7 days,
# so the coordinators' pruning leaves them alone), every fifth a run of one of 100 deleted
# schedules with its tick; each with one succeeded attempt by a long-lost worker and its output.
HISTORY = [
    """
    INSERT INTO workers (id, address, slots, last_heartbeat_at, lost_at)
    VALUES ('history-worker', '127.0.0.1:1', 0, now() - interval '60 days',
            now() - interval '60 days')
    """,
    """
    INSERT INTO schedules (id, name, cron, timezone, command, created_at, updated_at, anchor_at,
                           active_from, next_fire_at, deleted_at)
    SELECT md5('schedule' || s)::uuid, 'history-' || s, '* * * * *', 'UTC', 'true',
           now() - interval '60 days', now() - interval '60 days', now() - interval '60 days',
           now() - interval '60 days', now() - interval '59 days', now() - interval '1 day'
    FROM generate_series(0, 99) AS s
    """,
    """
    INSERT INTO tasks (id, command, status, created_at, scheduled_at, run_at, attempt,
                       worker_id, picked_at, started_at, exit_code, output_path, completed_at,
                       schedule_id, fire_time)
    SELECT md5('task' || i)::uuid, 'echo hello', 'succeeded', at, at, at, 1, 'history-worker',
           at + interval '2 ms', at + interval '5 ms', 0, '/var/lib/skiplock/out/' || i,
           at + interval '9 ms',
           CASE WHEN i %% 5 = 0 THEN md5('schedule' || (i / 5) %% 100)::uuid END,
           CASE WHEN i %% 5 = 0 THEN at END
    FROM generate_series(1, %(count)s) AS i,
         LATERAL (SELECT now() - interval '6 days' + i * interval '400 ms') AS t (at)
    """,
    """
    INSERT INTO attempts (task_id, attempt, worker_id, status, picked_at, started_at, ended_at,
                          exit_code, output_path)
    SELECT id, 1, worker_id, 'succeeded', picked_at, started_at, completed_at, 0, output_path
    FROM tasks WHERE worker_id = 'history-worker'
    """,
    """
    INSERT INTO attempt_outputs (task_id, attempt, head, tail, tail_offset, size, updated_at)
    SELECT id, 1, 'hello\n'::bytea, ''::bytea, 6, 6, completed_at
    FROM tasks WHERE worker_id = 'history-worker'
    """,
    """
    INSERT INTO schedule_ticks (schedule_id, fire_time, outcome, task_id, recorded_at)
    SELECT schedule_id, fire_time, 'started', id, fire_time
    FROM tasks WHERE worker_id = 'history-worker' AND schedule_id IS NOT NULL
    """,
]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["coordinators", "history", "all"], default="all")
    parser.add_argument("--count", type=int, default=2000, help="tasks per coordinator run")
    parser.add_argument("--coordinators", default="1,2,4")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=8,
                        help="slots per worker in the coordinator runs (default: 8)")
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="empty/history pairs")
    parser.add_argument("-n", dest="drain_count", type=int, default=600,
                        help="tasks in each history drain")
    parser.add_argument("--delay-count", type=int, default=300)
    parser.add_argument("--output-root", type=Path, default=REPO_ROOT / "worker_output")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- coordinators


def drained(url: str) -> tuple[int, float]:
    """(finished tasks, seconds from the first pick to the last completion)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE completed_at IS NOT NULL),"
            " extract(epoch FROM max(completed_at) - min(picked_at))::float8 FROM tasks"
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0.0)


def coordinator_run(admin_url: str, args: argparse.Namespace, k: int,
                    log_dir: Path) -> tuple[float, list[float], float]:
    """Drain COUNT prefilled `true` tasks with k coordinators: (tasks/s, each coordinator's
    CPU ms per task, workers' CPU ms per task)."""
    with databases.throwaway_database(admin_url, "skiplock_scale_", migrate=migrate) as url:
        cluster = Cluster(url, log_dir, worker_output=log_dir / "out")
        try:
            for _ in range(k):
                cluster.start_coordinator()
            for i in range(1, args.workers + 1):
                cluster.start_worker(f"worker-{i}", slots=args.slots)
            busy = list(cluster.coordinators) + list(cluster.workers.values())
            before = {p.name: process_cpu_seconds(p.pid) for p in busy}
            # No NOTIFY: the coordinators find the tasks on their next poll (at most 1 s).
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(PREFILL, {"command": "true", "count": args.count})
            deadline = time.monotonic() + 120
            while drained(url)[0] < args.count and time.monotonic() < deadline:
                time.sleep(0.2)
            coordinators = [(process_cpu_seconds(p.pid) - before[p.name]) * 1000 / args.count
                            for p in cluster.coordinators]
            workers = sum(process_cpu_seconds(p.pid) - before[p.name]
                          for p in cluster.workers.values())
            done, seconds = drained(url)
        finally:
            cluster.stop()
    if done < args.count:
        print(f"warning: {done} of {args.count} finished within 120 s", file=sys.stderr)
    return done / seconds if seconds > 0 else 0.0, coordinators, workers * 1000 / args.count


def coordinators_part(admin_url: str, args: argparse.Namespace, logs: Path) -> None:
    counts = [int(k) for k in args.coordinators.split(",")]
    print(f"coordinator scale-out: {args.count} prefilled tasks running 'true', "
          f"{args.workers} workers x {args.slots} slots dialing every coordinator")
    print("coordinators  tasks/s  ratio to 1  CPU ms/task per coordinator (sum)"
          "  workers' CPU ms/task")
    base = None
    for k in counts:
        phase(f"coordinators: {k}")
        rate, cpu, workers = coordinator_run(admin_url, args, k, logs / f"coord{k}")
        base = base or rate
        each = " ".join(f"{c:.2f}" for c in cpu)
        print(f"{k:>12}  {rate:>7.1f}  {rate / base:>10.2f}  {each} ({sum(cpu):.2f})"
              f"{workers:>22.2f}")


# ---------------------------------------------------------------- history


def load_history(url: str, count: int) -> float:
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        # A bulk load: no triggers (the event feed would record every row), no foreign key checks.
        conn.execute("SET session_replication_role = replica")
        for statement in HISTORY:
            conn.execute(statement, {"count": count})
        conn.execute("VACUUM ANALYZE")
        # The load's writes reach the disk now, not during the first measured run.
        conn.execute("CHECKPOINT")
    return time.monotonic() - started


def history_part(admin_url: str, args: argparse.Namespace, logs: Path) -> None:
    drain_args = bench.parse_args(["-n", str(args.drain_count), "--delay-count",
                                   str(args.delay_count), "--output-root",
                                   str(args.output_root)])
    results: dict[str, list[bench.ModeResult]] = {"empty": [], "history": []}
    with databases.throwaway_database(admin_url, "skiplock_hist_", migrate=migrate) as full:
        phase(f"history: loading {args.history} finished tasks")
        loaded_in = load_history(full, args.history)
        for r in range(args.rounds):
            for label in ("empty", "history"):
                for mode in ("drain", "delay"):
                    phase(f"round {r + 1}/{args.rounds}: {label}, {mode}")
                    log_dir = logs / f"{label}{r}"
                    if label == "history":
                        result = bench.measure_mode(mode, full, admin_url, drain_args, log_dir)
                    else:
                        result = bench.run_mode(mode, admin_url, drain_args, log_dir)
                    results[label].append(result)
    print(f"history: {args.history} finished tasks (+ attempts, outputs, "
          f"{args.history // 5} ticks) loaded in {loaded_in:.0f} s; {args.rounds} rounds, "
          "empty and history alternating")
    print("database  drain tasks/s (each round)  start delay p50 / p99 / max ms at "
          f"{drain_args.delay_rate:g}/s (each round)  early")
    for label, rows in results.items():
        drains = [r.tasks_per_s for r in rows if r.mode == "drain"]
        delays = [r.start_delay_ms or {} for r in rows if r.mode == "delay"]
        early = sum(r.early_starts for r in rows)
        rates = " ".join(f"{d:.1f}" for d in drains)
        starts = "  ".join("/".join(f"{d.get(q, 0):.1f}" for q in ("p50", "p99", "max"))
                           for d in delays)
        print(f"{label:<8}  {rates:<28}{starts:<48}  {early}")
    empty = [r.tasks_per_s for r in results["empty"] if r.mode == "drain"]
    full_rates = [r.tasks_per_s for r in results["history"] if r.mode == "drain"]
    print(f"median drain with history / empty: "
          f"{statistics.median(full_rates) / statistics.median(empty):.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.output_root.mkdir(parents=True, exist_ok=True)
    server = databases.discover_server()
    try:
        with tempfile.TemporaryDirectory(prefix="scale-", dir=args.output_root) as logs:
            if args.part in ("coordinators", "all"):
                coordinators_part(server.admin_url, args, Path(logs))
            if args.part in ("history", "all"):
                history_part(server.admin_url, args, Path(logs))
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
