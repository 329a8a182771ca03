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

With --against REF, instead: the claim statement of git ref REF, this tree's, and this tree's
with the queue "io" limited (to 1000: every claim locks and counts it, none is held back) run
in turn on the same data, each in a transaction rolled back (so each claims the same 200
tasks), --claims times each, on an empty history and beside 1,000,000 finished tasks. Figures:
the median microseconds per claimed task of each, and its ratio to REF's.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
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
        conn.execute("UPDATE worker_endings e SET ended_total = w.claimed_total"
                     " FROM workers w WHERE w.id = e.worker_id")
        conn.execute("UPDATE concurrency_keys SET running = 0")
        conn.execute("UPDATE queues SET running = 0 WHERE max_running IS NOT NULL")


def claim_statement_at(ref: str) -> str:
    """CLAIM_FOR_FREE_SLOTS as store/dispatch.py had it at git ref `ref`."""
    source = subprocess.run(
        ["git", "show", f"{ref}:store/dispatch.py"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CLAIM_FOR_FREE_SLOTS" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value
    raise SystemExit(f"no CLAIM_FOR_FREE_SLOTS in {ref}:store/dispatch.py")


def compare(
    conn: psycopg.Connection[Any], variants: dict[str, tuple[str, int | None]], claims: int
) -> dict[str, float]:
    """Median µs per claimed task of each variant (statement, limit of io), run in turn."""
    spent: dict[str, list[float]] = {name: [] for name in variants}
    for n in range(claims):
        names = list(variants)
        for name in names[n % len(names) :] + names[: n % len(names)]:
            statement, limit = variants[name]
            with conn.transaction(force_rollback=True):
                if limit is not None:
                    conn.execute(
                        "INSERT INTO queues (name, max_running) VALUES ('io', %s)", (limit,)
                    )
                started = time.perf_counter()
                rows = conn.execute(statement, {"live_within": 3600.0, "rotation": n}).fetchall()
                elapsed = time.perf_counter() - started
            got = sum(1 for row in rows if row[0] is not None)
            assert got > 0, f"{name} claimed nothing"
            spent[name].append(elapsed / got * 1e6)
    return {name: statistics.median(values) for name, values in spent.items()}


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


def against(admin_url: str, ref: str, queued: int, finished: int, claims: int) -> None:
    variants = {
        ref: (claim_statement_at(ref), None),
        "this tree": (dispatch.CLAIM_FOR_FREE_SLOTS, None),
        "this tree, io limited": (dispatch.CLAIM_FOR_FREE_SLOTS, 1000),
    }
    for history in (0, finished):
        name = databases.unique_name("skiplock_claimbench_")
        url = databases.create_database(admin_url, name)
        try:
            migrate(url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(NO_JIT)
                load(conn, queued, history, None)
                medians = compare(conn, variants, claims)
        finally:
            databases.drop_database(admin_url, name)
        base = medians[ref]
        for variant, value in medians.items():
            print(
                f"{history:>9,} finished, {variant}: {value:.1f} µs per task, "
                f"{value / base:.2f} of {ref}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--limit", type=int, default=None, help="max_running of the queue io (default: none)"
    )
    parser.add_argument("--against", metavar="REF", help="compare with git ref REF's claim")
    parser.add_argument("--claims", type=int, default=60, help="claims of each, with --against")
    args = parser.parse_args()
    server = databases.discover_server()
    try:
        if args.against:
            against(server.admin_url, args.against, args.queued, args.finished, args.claims)
            return
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
