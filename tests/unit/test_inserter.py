"""The scheduler's group-commit inserter against real PostgreSQL: requests that arrive together
are written together, and a row the database refuses fails its own request only."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from scheduler_svc.inserts import TaskInserter
from store.db import make_pool
from store.models import NewTask, TaskRow


def new(command: str, **fields: Any) -> NewTask:
    return NewTask(command, None, None, **fields)


async def insert_together(
    database_url: str, tasks: list[NewTask]
) -> list[TaskRow | BaseException]:
    pool = make_pool(database_url, 1, 2, "skiplock-test")
    await pool.open()
    try:
        inserter = TaskInserter(pool)
        return await asyncio.gather(*(inserter.insert(t) for t in tasks), return_exceptions=True)
    finally:
        await pool.close()


def stored_commands(db: psycopg.Connection[tuple[object, ...]]) -> list[object]:
    return [row[0] for row in db.execute("SELECT command FROM tasks ORDER BY command")]


def test_requests_arriving_together_are_all_written(database_url, db):
    rows = asyncio.run(insert_together(database_url, [new(f"echo {i}") for i in range(20)]))
    assert all(isinstance(r, TaskRow) and r.status == "queued" for r in rows)
    assert len({r.id for r in rows if isinstance(r, TaskRow)}) == 20
    assert len(stored_commands(db)) == 20


@pytest.mark.parametrize(
    "refused",
    [new("echo bad", max_retries=101), new("echo \x00 bad")],
    ids=["check-violation", "nul-in-text"],
)
def test_a_row_the_database_refuses_fails_only_its_own_request(
    database_url, db, refused, caplog
):
    results = asyncio.run(
        insert_together(database_url, [new("echo a"), refused, new("echo b")])
    )
    first, failed, last = results
    assert isinstance(first, TaskRow) and isinstance(last, TaskRow)
    assert isinstance(failed, psycopg.IntegrityError | psycopg.DataError)
    assert stored_commands(db) == ["echo a", "echo b"]
    assert "inserting 3 tasks singly" in caplog.text, "the three were not written as one batch"
