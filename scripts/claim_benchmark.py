#!/usr/bin/env python3
"""What one claim costs per claimed task, on an empty history and beside 1,000,000 finished
tasks; prints figures (not a test).

Each sitting uses a fresh database. 10,000 due tasks are queued, spread over 4 queues,
priorities -3..3 and, for one task in ten, 20 concurrency keys (limit 1000), and 8 workers of
25 slots each serve the queues in two classes (with and without a label). The claim statement
(store/dispatch.py CLAIM_FOR_FREE_SLOTS, 200 free slots) runs until the backlog is drained;
between claims, outside the clock, the workers' and keys' counters are reset so every claim
sees 200 free slots. With --limit N the queue "io" has a limit of N running tasks (its counter is
reset between claims too), so every claim also locks and counts a limited queue. The same is
measured again after 1,000,000 finished tasks were added (bulk
loaded with triggers off, then VACUUM ANALYZE). Figures: microseconds of wall time per claimed
task, and the ratio of the two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402

from devtools import databases  # noqa: E402
from store import dispatch  # noqa: E402
from store.db import NO_JIT  # noqa: E402
from store.migrate import migrate  # noqa: E402

QUEUES = ("default", "gpu", "batch", "io")


def load(conn: psycopg.Connection[Any], queued: int, finished: int, limit: int | None) -> None:
    conn.execute("SET session_replication_role = replica")  # no event triggers for the bulk
    if finished:
        conn.execute(
            "INSERT INTO tasks (id, command, status, scheduled_at, run_at, completed_at, queue,"
            " priority) SELECT gen_random_uuid(), 'true', 'succeeded', t, t, t,"
            " (%s::text[])[i %% 4 + 1], i %% 7 - 3 FROM generate_series(1, %s) AS i,"
            " LATERAL (SELECT now() - interval '30 days' + i * interval '2 s') AS x (t)",
            (list(QUEUES), finished),
        )
    conn.execute("SET session_replication_role = DEFAULT")
    conn.execute(
        "INSERT INTO tasks (id, command, scheduled_at, run_at, queue, priority, concurrency_key,"
        " concurrency_limit) SELECT gen_random_uuid(), 'true', t, t, (%s::text[])[i %% 4 + 1],"
        " i %% 7 - 3,"
        " CASE WHEN i %% 10 = 0 THEN 'key-' || i %% 20 END, CASE WHEN i %% 10 = 0 THEN 1000 END"
        " FROM generate_series(1, %s) AS i,"
        " LATERAL (SELECT now() - interval '1 hour' + i * interval '100 ms') AS x (t)",
        (list(QUEUES), queued),
    )
    for n in range(8):
        labels = '{"gpu": "a100"}' if n % 2 else "{}"
        conn.execute(
            "INSERT INTO workers (id, address, slots, last_heartbeat_at, queues, labels)"
            " VALUES (%s, %s, 25, now(), %s, %s::jsonb)",
            (f"w{n}", f"127.0.0.1:{9000 + n}", sorted(QUEUES), labels),
        )
    if limit is not None:
        conn.execute("INSERT INTO queues (name, max_running) VALUES ('io', %s)", (limit,))
    conn.execute("VACUUM ANALYZE tasks")
    conn.execute("VACUUM ANALYZE workers")


def drain(conn: psycopg.Connection[Any]) -> tuple[float, int, int]:
    """Claim until nothing is left; (seconds in claims, tasks claimed, claims)."""
    spent, claimed, claims = 0.0, 0, 0
    while True:
        started = time.perf_counter()
        rows = conn.execute(
            dispatch.CLAIM_FOR_FREE_SLOTS, {"live_within": 3600.0, "rotation": claims}
        ).fetchall()
        spent += time.perf_counter() - started
        got = sum(1 for row in rows if row[0] is not None)
        if got == 0:
            return spent, claimed, claims
        claimed += got
        claims += 1
        conn.execute("UPDATE workers SET open_attempts = 0")
        conn.execute("UPDATE concurrency_keys SET running = 0")
        conn.execute("UPDATE queues SET running = 0 WHERE max_running IS NOT NULL")


def sitting(
    admin_url: str, queued: int, finished: int, limit: int | None
) -> tuple[float, int, int]:
    name = databases.unique_name("skiplock_claimbench_")
    url = databases.create_database(admin_url, name)
    try:
        migrate(url)
        # As the services' pools connect (store/db.py).
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(NO_JIT)
            load(conn, queued, finished, limit)
            return drain(conn)
    finally:
        databases.drop_database(admin_url, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--limit", type=int, default=None, help="max_running of the queue io (default: none)"
    )
    args = parser.parse_args()
    server = databases.discover_server()
    try:
        ratios = []
        for round_no in range(1, args.rounds + 1):
            figures = []
            for finished in (0, args.finished):
                spent, claimed, claims = sitting(
                    server.admin_url, args.queued, finished, args.limit
                )
                per_task = spent / max(claimed, 1) * 1e6
                figures.append(per_task)
                print(
                    f"round {round_no}, {finished:>9,} finished: {claimed:,} claimed in "
                    f"{claims} claims, {spent * 1000:.0f} ms, {per_task:.1f} µs per task",
                    flush=True,
                )
            ratios.append(figures[1] / figures[0])
            print(f"round {round_no}: with history / empty = {ratios[-1]:.2f}", flush=True)
        print(f"median ratio {statistics.median(ratios):.2f}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
