"""Tasks through the real API, for the tests and the benchmarks: submitting, waiting on the
database, and counting how often a command really ran."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devtools.cluster import Cluster, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")

# --- submitting ---------------------------------------------------------------------------------


def submit(cluster: Cluster, command: str, **fields: Any) -> str:
    """POST /schedule; returns the new task's id."""
    response = cluster.http.post("/schedule", json={"command": command, **fields})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def submit_many(
    scheduler_url: str, commands: Sequence[str], parallel: int = 8, **fields: Any
) -> list[str]:
    """Submit every command (in parallel); returns the task ids in the order of `commands`.

    A request that fails for a transient reason (e.g. 503 during a database outage) is sent
    again, so every returned id is a task the scheduler accepted.
    """

    async def run() -> list[str]:
        ids: list[str | None] = [None] * len(commands)
        queue = iter(range(len(commands)))
        async with httpx.AsyncClient(base_url=scheduler_url, timeout=15.0) as client:

            async def submitter() -> None:
                for index in queue:
                    ids[index] = await post_until_accepted(client, commands[index], fields)

            await asyncio.gather(*(submitter() for _ in range(parallel)))
        return [i for i in ids if i is not None]

    return asyncio.run(run())


async def post_until_accepted(
    client: httpx.AsyncClient, command: str, fields: Mapping[str, Any], timeout: float = 60.0
) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body = {"command": command, **fields}
    while True:
        try:
            response = await client.post("/schedule", json=body)
            if response.status_code == 201:
                task_id: str = response.json()["task_id"]
                return task_id
            assert response.status_code == 503, response.text
        except httpx.TransportError:
            pass
        assert loop.time() < deadline, f"scheduler did not accept {command!r} in {timeout}s"
        await asyncio.sleep(0.1)


# --- reading the database -----------------------------------------------------------------------


def task_row(db: psycopg.Connection[Any], task_id: str) -> dict[str, Any]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None, f"task {task_id} missing"
    return row


def attempt_rows(db: psycopg.Connection[Any], task_id: str) -> list[dict[str, Any]]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(
        "SELECT * FROM attempts WHERE task_id = %s ORDER BY attempt", (task_id,)
    ).fetchall()


def status_of(db: psycopg.Connection[Any], task_id: str) -> str:
    row = db.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
    return "" if row is None else str(row[0])


def wait_status(
    db: psycopg.Connection[Any],
    task_id: str,
    statuses: str | Iterable[str],
    timeout: float = 20.0,
    cluster: Cluster | None = None,
) -> str:
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)

    def reached() -> str:
        status = status_of(db, task_id)
        return status if status in wanted else ""

    def explain() -> str:
        logs = cluster.logs() if cluster is not None else ""
        return f"task {task_id} to be {sorted(wanted)}, is {status_of(db, task_id)}\n{logs}"

    return wait_for(reached, timeout, interval=0.05, message=explain)


def wait_attempt(
    db: psycopg.Connection[Any],
    task_id: str,
    attempt: int,
    condition: str = "started_at IS NOT NULL",
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Wait until attempt `attempt` of the task exists and meets `condition` (SQL); return it."""
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    query = f"SELECT * FROM attempts WHERE task_id = %s AND attempt = %s AND ({condition})"

    def found() -> dict[str, Any]:
        return cur.execute(query, (task_id, attempt)).fetchone() or {}

    return wait_for(found, timeout, message=f"attempt {attempt} of {task_id} with {condition}")


def wait_all_terminal(
    db: psycopg.Connection[Any],
    task_ids: Sequence[str],
    timeout: float = 60.0,
    cluster: Cluster | None = None,
) -> None:
    def unfinished() -> int:
        row = db.execute(
            "SELECT count(*) FROM tasks WHERE id = ANY(%s::uuid[]) AND status <> ALL(%s)",
            (list(task_ids), list(TERMINAL)),
        ).fetchone()
        return int(row[0]) if row else -1

    def explain() -> str:
        counts = db.execute(
            "SELECT status, count(*) FROM tasks WHERE id = ANY(%s::uuid[]) GROUP BY status",
            (list(task_ids),),
        ).fetchall()
        logs = cluster.logs(30) if cluster is not None else ""
        return f"all {len(task_ids)} tasks to finish; by status: {counts}\n{logs}"

    wait_for(lambda: unfinished() == 0, timeout, interval=0.2, message=explain)


# --- counting real executions -----------------------------------------------------------------


def recording_command(log: Path, token: str, tail: str = "", at_end: bool = False) -> str:
    """A command that appends `token` to `log` once per execution (one atomic line) and runs
    `tail`, after the token or (at_end) before it. Counting the tokens counts how often a task
    really ran, independent of the database."""
    record = f"echo {token} >> {log}"
    if not tail:
        return record
    return f"{tail}; {record}" if at_end else f"{record}; {tail}"


def executions(log: Path) -> Counter[str]:
    try:
        return Counter(log.read_text().split())
    except FileNotFoundError:
        return Counter()


def new_token() -> str:
    return uuid.uuid4().hex
