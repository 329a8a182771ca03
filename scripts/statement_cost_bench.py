#!/usr/bin/env python3
"""What a task's statements cost PostgreSQL: the backend's CPU per task for its insert, its
claim and its ending (with its output merged), measured from /proc, in all and statement by
statement; prints figures (not a test).

Each run uses a fresh database migrated by the tree at --tree (default: this one) and that
tree's store package, so two trees can be compared in turn (A B A B). Two workers of 4 slots
are registered. --mode single: one task at a time (insert, claim, end: three statements, as at
a low steady rate); --mode batch: 100 tasks inserted in one statement, then claimed 8 at a time
and ended 8 at a time. --sql FILE is run on the database first (a schema variant to weigh
without a migration). The server must be on this machine (its backend's CPU is read from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO_ROOT, help="a checkout of skiplock")
    parser.add_argument("--mode", choices=("single", "batch"), default="single")
    parser.add_argument("--tasks", type=int, default=1500, help="tasks measured")
    parser.add_argument("--sql", type=Path, help="run this file on the database first")
    return parser.parse_args()


def backend_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(args: argparse.Namespace, url: str) -> None:
    import psycopg

    from store import dispatch, tasks
    from store.db import NO_JIT
    from store.models import AttemptEnd, NewTask, OutputDelta
    from store.vocabulary import AttemptStatus

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(NO_JIT)
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    pid = int(row[0])
    for worker in ("w1", "w2"):
        await dispatch.upsert_worker(conn, worker, "127.0.0.1:1", 4, False)
    per_round = 1 if args.mode == "single" else 100

    # Backend CPU per statement kind, read around each statement: /proc counts in clock ticks,
    # so one statement reads 0 or a tick, and only the sum over many rounds means something.
    spent = {"insert": 0.0, "claim": 0.0, "end": 0.0}

    def charge(kind: str, since: float) -> float:
        now = backend_cpu_seconds(pid)
        spent[kind] += now - since
        return now

    async def one_round() -> None:
        new = [(uuid.uuid4(), NewTask(command="echo hello", scheduled_at=None,
                                      delay_seconds=None)) for _ in range(per_round)]
        mark = backend_cpu_seconds(pid)
        await tasks.insert_tasks(conn, new)
        mark = charge("insert", mark)
        left = per_round
        while left:
            claimed = (await dispatch.claim_for_free_slots(conn, 3600.0, 0)).attempts
            mark = charge("claim", mark)
            ends = [AttemptEnd(a.task_id, a.attempt, AttemptStatus.SUCCEEDED, None,
                               worker_id=a.worker_id, exit_code=0, output_path="/dev/null")
                    for a in claimed]
            deltas = [OutputDelta(a.task_id, a.attempt, a.worker_id, 0, b"hello\n", 6, b"", 6,
                                  65536) for a in claimed]
            mark = backend_cpu_seconds(pid)
            await dispatch.end_attempts(conn, ends, deltas)
            mark = charge("end", mark)
            left -= len(ends)

    for _ in range(max(1, 50 // per_round)):  # warm up: statements prepared, caches filled
        await one_round()
    rounds = max(1, args.tasks // per_round)
    spent = dict.fromkeys(spent, 0.0)
    cpu, wall = backend_cpu_seconds(pid), time.perf_counter()
    for _ in range(rounds):
        await one_round()
    cpu, wall = backend_cpu_seconds(pid) - cpu, time.perf_counter() - wall
    done = rounds * per_round
    print(f"{args.tree} {args.mode}: backend CPU {cpu / done * 1e3:.3f} ms per task, "
          f"wall {wall / done * 1e3:.3f} ms per task ({done} tasks); of which "
          + ", ".join(f"{kind} {seconds / done * 1e3:.2f}" for kind, seconds in spent.items()))
    await conn.close()


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    from devtools import databases
    from store.migrate import migrate

    server = databases.discover_server()
    with databases.throwaway_database(server.admin_url, "skiplock_stmt_", migrate=migrate) as url:
        if args.sql:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(args.sql.read_text())
        asyncio.run(measure(args, url))


if __name__ == "__main__":
    main()
