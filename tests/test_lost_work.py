"""Lost work has its own budget: an attempt lost with its worker (or killed by the worker's
shutdown) is retried from lost_retries first, then from max_retries; a failure of the command
itself only ever uses max_retries. On the real database, through the store's own statements."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from store import dispatch
from store.models import AttemptEnd
from store.vocabulary import AttemptStatus, EndReason
from tests.support.attempts import end_attempt

Db = psycopg.Connection[Any]


def add_task(db: Db, lost_retries: int, max_retries: int) -> uuid.UUID:
    task_id = uuid.uuid4()
    db.execute(
        "INSERT INTO tasks (id, command, scheduled_at, run_at, lost_retries, max_retries,"
        " retry_backoff_seconds) VALUES (%s, 'true', now(), now(), %s, %s, 0)",
        (task_id, lost_retries, max_retries),
    )
    return task_id


def run_attempt(db: Db, url: str, task_id: uuid.UUID, reason: EndReason) -> str:
    """Claim the task (due now) and end its attempt as failed for `reason`; its new status."""

    async def claim_and_end() -> str | None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            claim = await dispatch.claim_for_free_slots(conn, 60.0, 0)
            (attempt,) = [a for a in claim.attempts if a.task_id == task_id]
            end = AttemptEnd(task_id, attempt.attempt, AttemptStatus.FAILED, reason)
            return (await end_attempt(conn, end))[1]

    db.execute("UPDATE tasks SET run_at = now() WHERE id = %s AND status = 'queued'", (task_id,))
    status = asyncio.run(claim_and_end())
    assert status is not None
    return status


def budget(db: Db, task_id: uuid.UUID) -> tuple[int, int]:
    row = db.execute("SELECT losses, failures FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.fixture
def worker(db: Db) -> None:
    db.execute(
        "INSERT INTO workers (id, address, slots, last_heartbeat_at)"
        " VALUES ('w1', '127.0.0.1:9001', 4, now())"
    )


@pytest.mark.parametrize("reason", [EndReason.WORKER_LOST, EndReason.WORKER_SHUTDOWN])
def test_lost_attempts_use_the_lost_budget_first(db, database_url, worker, reason):
    task_id = add_task(db, lost_retries=2, max_retries=1)
    assert run_attempt(db, database_url, task_id, reason) == "queued"
    assert budget(db, task_id) == (1, 0)
    assert run_attempt(db, database_url, task_id, reason) == "queued"
    assert budget(db, task_id) == (2, 0)
    # The lost budget is spent: the next loss uses an ordinary retry, then the task fails.
    assert run_attempt(db, database_url, task_id, reason) == "queued"
    assert budget(db, task_id) == (2, 1)
    assert run_attempt(db, database_url, task_id, reason) == "failed"


def test_without_a_lost_budget_a_loss_uses_an_ordinary_retry(db, database_url, worker):
    task_id = add_task(db, lost_retries=0, max_retries=1)
    assert run_attempt(db, database_url, task_id, EndReason.WORKER_LOST) == "queued"
    assert budget(db, task_id) == (0, 1)
    assert run_attempt(db, database_url, task_id, EndReason.WORKER_LOST) == "failed"


def test_a_failing_command_never_uses_the_lost_budget(db, database_url, worker):
    task_id = add_task(db, lost_retries=5, max_retries=1)
    assert run_attempt(db, database_url, task_id, EndReason.EXIT_CODE) == "queued"
    assert run_attempt(db, database_url, task_id, EndReason.WORKER_LOST) == "queued"
    assert budget(db, task_id) == (1, 1)
    assert run_attempt(db, database_url, task_id, EndReason.TIMEOUT) == "failed"


def test_lost_retries_through_the_api(http):
    made = http.post("/schedule", json={"command": "true", "lost_retries": 3, "delay_seconds": 60})
    assert made.status_code == 201, made.text
    detail = http.get(f"/tasks/{made.json()['task_id']}").json()
    assert (detail["lost_retries"], detail["lost_retries_left"]) == (3, 3)
    default = http.post("/schedule", json={"command": "true", "delay_seconds": 60}).json()
    assert http.get(f"/tasks/{default['task_id']}").json()["lost_retries"] == 0
    for bad in (-1, 101, "3", 1.5):
        response = http.post("/schedule", json={"command": "true", "lost_retries": bad})
        assert response.status_code == 422 and "lost_retries" in response.text
    body = {"name": "lossy", "cron": "0 0 1 1 *", "command": "true", "lost_retries": 2}
    schedule = http.post("/schedules", json=body).json()
    assert schedule["lost_retries"] == 2
    run = http.post(f"/schedules/{schedule['id']}/trigger").json()
    assert http.get(f"/tasks/{run['task']['task_id']}").json()["lost_retries"] == 2
