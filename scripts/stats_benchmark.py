#!/usr/bin/env python3
"""What GET /stats and /stats/history cost on a big table, against counting every task.

Fills a fresh database with ROWS finished tasks (one every 2.6 s back from now, a fiftieth of
them failed) and 2,000 due queued ones, analyses it, then times each statement RUNS times and
prints the median, min and max in ms, with the baseline `SELECT status, count(*) FROM tasks
GROUP BY status` (what "counts by status" costs when every row is read) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools import databases  # noqa: E402
from store import stats  # noqa: E402
from store.migrate import migrate  # noqa: E402

FILL = """
INSERT INTO tasks (id, command, status, created_at, scheduled_at, run_at, picked_at, started_at,
                   completed_at, failed_at, attempt, worker_id)
SELECT gen_random_uuid(), 'echo hello', CASE WHEN i %% 50 = 0 THEN 'failed' ELSE 'succeeded' END,
       ts, ts, ts, ts + interval '5 ms', ts + interval '20 ms', ts + interval '40 ms',
       CASE WHEN i %% 50 = 0 THEN ts + interval '40 ms' END, 1, 'w1'
FROM (SELECT i, now() - i * interval '2.6 seconds' AS ts
      FROM generate_series(1, %(rows)s) i) g
"""
DUE = """
INSERT INTO tasks (id, command, scheduled_at, run_at)
SELECT gen_random_uuid(), 'echo due', now() - interval '1 minute', now() - interval '1 minute'
FROM generate_series(1, 2000)
"""
BASELINE = "SELECT status, count(*) FROM tasks GROUP BY status"


def timed(db: psycopg.Connection[Any], sql: str, params: dict[str, Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        db.execute(sql, params).fetchall()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    server = databases.discover_server()
    try:
        with (
            databases.throwaway_database(server.admin_url, "skiplock_st_", migrate=migrate) as url,
            psycopg.connect(url, autocommit=True) as db,
        ):
            db.execute("ALTER TABLE tasks DISABLE TRIGGER USER")  # no events for the fill
            db.execute(FILL, {"rows": args.rows})
            db.execute(DUE)
            db.execute("ALTER TABLE tasks ENABLE TRIGGER USER")
            db.execute("VACUUM ANALYZE tasks")
            statements = {
                "GET /stats": (stats.STATS, {"recent": stats.RECENT_MINUTES,
                                             "tick_minutes": stats.TICK_MINUTES}),
                "GET /stats/history?minutes=60": (stats.HISTORY, {"minutes": 60}),
                "GET /stats/history?minutes=360": (stats.HISTORY, {"minutes": 360}),
                "baseline: count(*) GROUP BY status": (BASELINE, {}),
            }  # fmt: skip
            medians = {}
            print(f"{args.rows} finished tasks + 2000 due; ms over {args.runs} runs")
            for name, (sql, params) in statements.items():
                times = timed(db, sql, params, args.runs)
                medians[name] = statistics.median(times)
                print(f"  {name}: median {medians[name]:.1f}, min {min(times):.1f}, "
                      f"max {max(times):.1f}")
            base = medians["baseline: count(*) GROUP BY status"]
            for name in list(statements)[:3]:
                print(f"  {name} / baseline: {medians[name] / base:.3f}")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
