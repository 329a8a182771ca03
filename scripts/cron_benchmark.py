#!/usr/bin/env python3
"""Benchmark cron schedules on a real local cluster; prints figures (it is not a test).

Steady phase: SCHEDULES schedules, each firing once a minute at second (i mod 60), so about
SCHEDULES/60 ticks fall due every second, run `true` on WORKERS x SLOTS worker slots. Over
DURATION seconds (after a WARMUP) it measures, from the database's own timestamps:
  decided  = recorded_at - fire_time  (a coordinator recorded the tick and created the run)
  claimed  = picked_at  - fire_time  (a coordinator handed the run to a worker)
  started  = started_at - fire_time  (the worker started the command)
plus ticks missed or absent (both must be 0) and each service's CPU share (process CPU
seconds / wall seconds; 1.0 = one core busy).

Burst phase: BURST schedules all due at the same instant, with no worker running, to time
materialisation alone: fire time -> every tick recorded and its run committed and claimable
(watched by polling the database). Then workers start and it reports how long the runs take to
drain through the slots.

Each phase uses a fresh database on the server at --admin-url (dropped afterwards) and real
scheduler, coordinator and worker processes (devtools/cluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402

from common.cronspec import fire_times, fire_times_between, parse  # noqa: E402
from devtools import databases  # noqa: E402
from devtools.cluster import Cluster, ServiceProcess, wait_for  # noqa: E402
from devtools.cpu import CpuSample, cpu_sample  # noqa: E402
from devtools.progress import watched  # noqa: E402
from store import schedules, tasks  # noqa: E402
from store.migrate import migrate  # noqa: E402
from store.models import NewTask, ScheduleSettings  # noqa: E402


def cpu_report(before: CpuSample, after: CpuSample) -> list[str]:
    wall = after.wall - before.wall
    lines = [f"  CPU share over {wall:.0f} s (1.0 = one core):"]
    ours = 0.0
    for name in before.services:
        used = after.services[name] - before.services[name]
        ours += used
        lines.append(f"    {name:<14} {used / wall:.3f}")
    pg = after.postgres - before.postgres
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    cores = total / wall
    lines.append(f"    {'postgres (all)':<14} {pg / wall:.3f}")
    lines.append(
        f"    machine busy   {busy / wall:.2f} of {cores:.1f} cores; everything else: "
        f"{max(busy - ours - pg, 0) / wall:.2f}; load average {os.getloadavg()[0]:.2f}"
    )
    return lines


# --- setup -----------------------------------------------------------------------------------


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = databases.unique_name("skiplock_cronbench_")
    url = databases.create_database(admin_url, name)
    try:
        migrate(url)
        yield url
    finally:
        databases.drop_database(admin_url, name)


def create_schedules(url: str, crons: Sequence[str]) -> None:
    """Create the schedules as POST /schedules would, in one transaction (fast)."""

    async def insert() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
            at = await schedules.database_now(conn)
            for i, cron in enumerate(crons):
                spec = parse(cron, "UTC")
                first = fire_times(spec, at, at, 1)[0]
                chosen = ScheduleSettings(
                    name=f"bench-{i:05d}",
                    cron=cron,
                    timezone="UTC",
                    command="true",
                    overlap="skip",
                    catchup_window_seconds=60,
                    timeout_seconds=None,
                    max_retries=0,
                    retry_backoff_seconds=1.0,
                    paused=False,
                    jitter_seconds=0.0,
                )
                await schedules.insert_schedule(conn, uuid.uuid4(), chosen, at, first)

    asyncio.run(insert())


def db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def percentiles(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return (
        f"p50 {pick(0.5) * 1000:7.1f} ms  p90 {pick(0.9) * 1000:7.1f} ms  "
        f"p99 {pick(0.99) * 1000:7.1f} ms  max {ordered[-1] * 1000:7.1f} ms  "
        f"mean {statistics.fmean(ordered) * 1000:7.1f} ms"
    )


# --- phases ----------------------------------------------------------------------------------


def wait_until(conn: psycopg.Connection[Any], instant: datetime) -> None:
    seconds = (instant - db_now(conn)).total_seconds()
    wait_for(lambda: db_now(conn) >= instant, max(seconds, 0) + 30, interval=0.05)


def measured_window(
    conn: psycopg.Connection[Any],
    args: argparse.Namespace,
    services: dict[str, ServiceProcess],
    start: datetime,
    seconds: float,
    label: str,
) -> tuple[datetime, list[str]]:
    """Wait out the window [start, start + seconds) and its runs; return its end and CPU use."""
    end = start + timedelta(seconds=seconds)
    began, total = time.monotonic(), (end - db_now(conn)).total_seconds()
    with watched(f"{label}: seconds to the window's end", total, lambda: time.monotonic() - began):
        wait_until(conn, start)
        before = cpu_sample(services)
        wait_until(conn, end)
        after = cpu_sample(services)
    wait_for(
        lambda: unfinished(conn, start, end) == 0,
        300,
        interval=0.2,
        message="the window's runs to finish",
    )
    return end, cpu_report(before, after)


def unfinished(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> int:
    row = conn.execute(
        "SELECT count(*) FROM tasks WHERE scheduled_at >= %s AND scheduled_at < %s"
        " AND status IN ('queued', 'dispatched', 'running')",
        (start, end),
    ).fetchone()
    return int(row[0]) if row else 0


def report_runs(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> None:
    """Delays of the runs due in [start, end), from their due time (scheduled_at)."""
    rows = conn.execute(
        "SELECT scheduled_at, extract(epoch FROM picked_at - scheduled_at),"
        " extract(epoch FROM started_at - scheduled_at), status"
        " FROM tasks WHERE scheduled_at >= %s AND scheduled_at < %s",
        (start, end),
    ).fetchall()
    early = sum(1 for r in rows if r[2] is not None and r[2] < 0)
    print(
        f"  runs {len(rows)}, statuses {dict(Counter(r[3] for r in rows))}, "
        f"started before due: {early}"
    )
    for label, index in (("claimed", 1), ("started", 2)):
        values = [float(r[index]) for r in rows if r[index] is not None]
        print(f"  due -> {label:<8} {percentiles(values)}")
    chunks: dict[int, list[float]] = {}
    for due, _, started, _ in rows:
        if started is not None:
            chunks.setdefault(int((due - start).total_seconds() // 30), []).append(float(started))
    print(
        "  started p99 per 30 s: "
        + "  ".join(
            f"{sorted(v)[int(0.99 * (len(v) - 1))]:.2f}s" for _, v in sorted(chunks.items())
        )
    )


def baseline(args: argparse.Namespace, log_dir: Path) -> None:
    """The same load as one-off tasks: SCHEDULES/60 tasks due at each whole second."""
    seconds = int(args.baseline)
    count = args.schedules * seconds // 60
    with fresh_database(args.admin_url) as url, psycopg.connect(url, autocommit=True) as conn:
        cluster = Cluster(url, log_dir / "baseline")
        try:
            cluster.start(workers=args.workers, coordinators=args.coordinators, slots=args.slots)
            services = {f"coordinator-{i + 1}": p for i, p in enumerate(cluster.coordinators)}
            services |= {name: p for name, p in cluster.workers.items()}
            start = (db_now(conn) + timedelta(seconds=15)).replace(microsecond=0)

            async def insert() -> None:
                async with (
                    await psycopg.AsyncConnection.connect(url) as aconn,
                    aconn.transaction(),
                ):
                    for i in range(count):
                        due = start + timedelta(seconds=i % seconds)
                        new = NewTask(command="true", scheduled_at=due, delay_seconds=None)
                        await tasks.insert_task(aconn, uuid.uuid4(), new)

            asyncio.run(insert())
            print(
                f"baseline: {count} one-off tasks, {count / seconds:.1f} due at each second",
                flush=True,
            )
            end, cpu = measured_window(conn, args, services, start, seconds, "baseline")
            print(f"baseline: window {seconds} s, one-off tasks")
            report_runs(conn, start, end)
            print("\n".join(cpu))
        finally:
            cluster.stop()


def steady(args: argparse.Namespace, log_dir: Path) -> None:
    crons = [f"{i % 60} * * * * *" for i in range(args.schedules)]
    with fresh_database(args.admin_url) as url, psycopg.connect(url, autocommit=True) as conn:
        create_schedules(url, crons)
        cluster = Cluster(url, log_dir / "steady")
        try:
            cluster.start(workers=args.workers, coordinators=args.coordinators, slots=args.slots)
            services = {f"coordinator-{i + 1}": p for i, p in enumerate(cluster.coordinators)}
            services |= {name: p for name, p in cluster.workers.items()}
            print(f"steady: {args.schedules} schedules, warming up {args.warmup:.0f} s", flush=True)
            start = db_now(conn) + timedelta(seconds=args.warmup)
            end, cpu = measured_window(conn, args, services, start, args.duration, "steady")
            report_steady(conn, args, crons, start, end)
            print("\n".join(cpu))
        finally:
            cluster.stop()


def expected_ticks(crons: Sequence[str], start: datetime, end: datetime) -> int:
    by_cron: dict[str, int] = {}
    for cron in set(crons):
        spec = parse(cron, "UTC")
        fires = fire_times_between(spec, start - timedelta(microseconds=1), end, start, 10_000)
        by_cron[cron] = sum(1 for f in fires if f < end)
    return sum(by_cron[c] for c in crons)


def report_steady(
    conn: psycopg.Connection[Any],
    args: argparse.Namespace,
    crons: Sequence[str],
    start: datetime,
    end: datetime,
) -> None:
    outcomes = dict(
        conn.execute(
            "SELECT outcome, count(*) FROM schedule_ticks WHERE fire_time >= %s AND fire_time < %s"
            " GROUP BY outcome",
            (start, end),
        ).fetchall()
    )
    decided = [
        float(r[0])
        for r in conn.execute(
            "SELECT extract(epoch FROM recorded_at - fire_time) FROM schedule_ticks"
            " WHERE fire_time >= %s AND fire_time < %s",
            (start, end),
        ).fetchall()
    ]
    expected = expected_ticks(crons, start, end)
    recorded = sum(outcomes.values())
    print(
        f"steady: window {args.duration:.0f} s, {expected} ticks due "
        f"({expected / args.duration:.1f}/s), {args.coordinators} coordinator(s), "
        f"{args.workers} workers x {args.slots} slots"
    )
    print(f"  ticks recorded {recorded}, absent {expected - recorded}, outcomes {outcomes}")
    print(f"  fire -> decided  {percentiles(decided)}")
    report_runs(conn, start, end)


def started_runs(url: str, at: datetime) -> int:
    """Runs of the burst started so far (on a connection of its own: progress is drawn from a
    thread of its own)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM tasks WHERE fire_time = %s AND started_at IS NOT NULL", (at,)
        ).fetchone()
    return int(row[0]) if row else 0


def burst(args: argparse.Namespace, log_dir: Path) -> None:
    with fresh_database(args.admin_url) as url, psycopg.connect(url, autocommit=True) as conn:
        at = db_now(conn) + timedelta(seconds=args.burst_lead)
        at = at.replace(microsecond=0)
        cron = f"{at.second} {at.minute} {at.hour} {at.day} {at.month} *"
        cluster = Cluster(url, log_dir / "burst")
        try:
            for _ in range(args.coordinators):
                cluster.start_coordinator()
            create_schedules(url, [cron] * args.burst)
            services = {f"coordinator-{i + 1}": p for i, p in enumerate(cluster.coordinators)}
            print(f"burst: {args.burst} schedules due at {at.isoformat()}, no workers", flush=True)
            wait_for(
                lambda: db_now(conn) >= at - timedelta(seconds=1),
                args.burst_lead + 30,
                interval=0.01,
            )
            before = cpu_sample(services)
            count_sql = "SELECT count(*) FROM tasks WHERE fire_time = %s"

            def all_created() -> datetime | None:
                row = conn.execute(count_sql, (at,)).fetchone()
                return db_now(conn) if row and row[0] >= args.burst else None

            done_at = wait_for(all_created, 300, interval=0.01, message="the burst's runs")
            assert done_at is not None
            after = cpu_sample(services)
            decided = [
                float(r[0])
                for r in conn.execute(
                    "SELECT extract(epoch FROM recorded_at - fire_time) FROM schedule_ticks"
                    " WHERE fire_time = %s",
                    (at,),
                ).fetchall()
            ]
            print(
                f"  all {args.burst} runs committed and claimable "
                f"{(done_at - at).total_seconds() * 1000:.0f} ms after the fire time "
                "(seen by polling every 10 ms)"
            )
            print(f"  fire -> decided  {percentiles(decided)}  (pass start of each tick)")
            print("\n".join(cpu_report(before, after)))
            # Now let workers drain the burst through their slots.
            for i in range(1, args.workers + 1):
                cluster.start_worker(f"worker-{i}", slots=args.slots)

            def all_started() -> datetime | None:
                row = conn.execute(
                    "SELECT max(started_at) FROM tasks WHERE fire_time = %s"
                    " HAVING count(*) FILTER (WHERE status = 'succeeded') >= %s",
                    (at, args.burst),
                ).fetchone()
                return row[0] if row else None

            with watched("burst: runs started", args.burst, lambda: started_runs(url, at)):
                last_start = wait_for(
                    all_started, 600, interval=0.2, message="the burst to drain"
                )
            assert last_start is not None
            print(
                f"  with {args.workers} workers x {args.slots} slots started afterwards: "
                f"last run started {(last_start - at).total_seconds():.1f} s after the fire "
                "time"
            )
        finally:
            cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--admin-url",
        default=databases.LOCAL_URL,
        help="server to create throwaway databases on (default: %(default)s)",
    )
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=180.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=65.0, help="seconds before measuring")
    parser.add_argument("--burst", type=int, default=10_000, help="0 skips the burst phase")
    parser.add_argument(
        "--burst-lead",
        type=float,
        default=20.0,
        help="seconds between creating the burst and its fire time",
    )
    parser.add_argument("--coordinators", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument(
        "--baseline",
        type=float,
        default=90.0,
        help="seconds of the one-off task baseline; 0 skips it",
    )
    parser.add_argument("--skip-steady", action="store_true")
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="skiplock-cronbench-"))
    print(f"logs in {log_dir}; load average before: {os.getloadavg()}", flush=True)
    if args.baseline > 0:
        baseline(args, log_dir)
    if not args.skip_steady:
        steady(args, log_dir)
    if args.burst > 0:
        burst(args, log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
