"""What must hold after any run, faults or not, checked from the database.

Every accepted task is there and ended in exactly one terminal state; its attempts are numbered
without gaps, all ended, never one after a success; a task started more than once only where an
attempt ended with a recorded reason; no slot is left counted. With a log of real executions
(see devtools.tasks.recording_command) it also checks how often each command really ran.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

TERMINAL = ("succeeded", "failed", "cancelled")
# Attempt endings after which the command cannot have run on the worker.
NEVER_RAN = ("worker_refused", "spawn_failed", "dispatch_lost")


@dataclass
class Audit:
    statuses: Counter[str]
    attempts: dict[str, list[dict[str, Any]]]
    # Why attempts before the last one ended, over all tasks: each one is a recorded retry.
    retry_reasons: Counter[str] = field(default_factory=Counter)
    # Tasks whose command really ran more than once (only with an execution log).
    duplicates: list[str] = field(default_factory=list)

    @property
    def retried(self) -> list[str]:
        return [task for task, rows in self.attempts.items() if len(rows) > 1]


def audit(
    db: psycopg.Connection[Any],
    accepted: Sequence[str],
    *,
    retry_reasons: Iterable[str] = (),
    ran: Mapping[str, int] | None = None,
    only_these: bool = True,
) -> Audit:
    """Check the invariants for the `accepted` task ids and return what was found.

    retry_reasons: the reasons an attempt before a task's last one may have ended with (the
    faults the test injected, and retries it asked for); any other earlier attempt fails the
    check. ran: how many times each task's command really executed, by task id.
    only_these: the database holds no task besides `accepted`.
    """
    allowed = set(retry_reasons)
    ids = list(accepted)
    assert len(set(ids)) == len(ids), "an id was accepted twice"
    cur = db.cursor(row_factory=dict_row)
    tasks = {
        str(row["id"]): row
        for row in cur.execute("SELECT * FROM tasks WHERE id = ANY(%s::uuid[])", (ids,))
    }
    missing = set(ids) - set(tasks)
    assert not missing, f"{len(missing)} accepted task(s) missing, e.g. {sorted(missing)[:3]}"
    if only_these:
        total = cur.execute("SELECT count(*) AS n FROM tasks").fetchone()
        assert total is not None and total["n"] == len(ids), f"unexpected tasks: {total}"
    statuses = Counter(str(t["status"]) for t in tasks.values())
    unfinished = {s: n for s, n in statuses.items() if s not in TERMINAL}
    assert not unfinished, f"tasks not in a terminal state: {unfinished}"

    attempts: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id in ids}
    for row in cur.execute(
        "SELECT * FROM attempts WHERE task_id = ANY(%s::uuid[]) ORDER BY task_id, attempt",
        (ids,),
    ):
        attempts[str(row["task_id"])].append(row)

    result = Audit(statuses=statuses, attempts=attempts)
    problems: list[str] = []
    for task_id, task in tasks.items():
        rows = attempts[task_id]
        problems.extend(
            f"task {task_id}: {p}" for p in _task_problems(task, rows, allowed, ran, result)
        )
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:20])

    leaked = cur.execute(
        "SELECT w.worker_id, w.open_attempts,"
        " (SELECT count(*) FROM attempts a"
        "  WHERE a.worker_id = w.worker_id AND a.ended_at IS NULL) AS n"
        " FROM worker_load w WHERE w.open_attempts <> 0"
        " OR EXISTS (SELECT 1 FROM attempts a"
        "            WHERE a.worker_id = w.worker_id AND a.ended_at IS NULL)"
    ).fetchall()
    assert not leaked, f"slots still counted or attempts still open: {leaked}"
    return result


def _task_problems(
    task: Mapping[str, Any],
    rows: list[dict[str, Any]],
    allowed: set[str],
    ran: Mapping[str, int] | None,
    result: Audit,
) -> list[str]:
    problems = []
    numbers = [r["attempt"] for r in rows]
    if numbers != list(range(1, len(rows) + 1)) or task["attempt"] != len(rows):
        problems.append(f"attempt numbers {numbers}, task says {task['attempt']}")
    still_open = [r["attempt"] for r in rows if r["ended_at"] is None]
    if still_open:
        problems.append(f"attempts {still_open} never ended")
    successes = [r["attempt"] for r in rows if r["status"] == "succeeded"]
    if successes and successes != [len(rows)]:
        problems.append(f"started again after succeeding (succeeded attempts {successes})")
    last = rows[-1] if rows else None
    if task["status"] == "succeeded" and (last is None or last["status"] != "succeeded"):
        problems.append("succeeded without a succeeded last attempt")
    if task["status"] == "failed" and (
        last is None or last["status"] != "failed" or last["reason"] != task["last_reason"]
    ):
        problems.append(f"failed ({task['last_reason']}) but its last attempt is {last}")
    for row in rows[:-1]:
        result.retry_reasons[str(row["reason"])] += 1
        if row["reason"] not in allowed:
            problems.append(
                f"attempt {row['attempt']} ended {row['status']}/{row['reason']}"
                f" ({row['detail']}), not a reason this run allows a retry for"
            )
    if ran is not None:
        times = ran.get(str(task["id"]), 0)
        could_have = sum(1 for r in rows if r["reason"] not in NEVER_RAN)
        if times > 1:
            result.duplicates.append(str(task["id"]))
        if times > could_have:
            problems.append(f"ran {times} times, but only {could_have} attempt(s) may have run")
        if task["status"] == "succeeded" and times == 0:
            problems.append("succeeded without ever running")
    return problems


class SlotWatch:
    """Samples the workers table in the background: no worker may ever have more attempts
    counted against it than it has slots."""

    def __init__(self, database_url: str, interval: float = 0.05) -> None:
        self.database_url = database_url
        self.interval = interval
        self.samples = 0
        self.over: list[tuple[str, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slot-watch", daemon=True)

    def __enter__(self) -> SlotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=2) as c:
                    while not self._stop.wait(self.interval):
                        rows = c.execute(
                            "SELECT worker_id, open_attempts, slots FROM worker_load"
                            " WHERE open_attempts > slots"
                        ).fetchall()
                        self.samples += 1
                        self.over.extend((str(r[0]), int(r[1]), int(r[2])) for r in rows)
            except psycopg.OperationalError:
                self._stop.wait(0.2)  # the database is down on purpose; sample again later
