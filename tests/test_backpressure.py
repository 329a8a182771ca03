"""Backpressure on a real scheduler process (no coordinator, so queued tasks stay queued):
beyond --max-queued or --max-queued-per-queue, POST /schedule and POST /tasks/batch answer 429
with Retry-After and write nothing; under the limits they are accepted as usual."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from common.config import ConfigError
from devtools.cluster import wait_for
from scheduler_svc import config


def queued(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT queue, count(*)::int FROM tasks WHERE status = 'queued' GROUP BY queue"
        ).fetchall()
    return {str(q): int(n) for q, n in rows}


def refused(response: httpx.Response, says: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == "1"
    assert says in response.json()["detail"], response.text


def test_beyond_the_limits_submissions_get_429_and_write_nothing(cluster_factory):
    cluster = cluster_factory(start=False)
    cluster.start_scheduler(["--max-queued=5", "--max-queued-per-queue=3"])
    http: httpx.Client = cluster.http
    url: str = cluster.database_url

    def schedule(**fields: Any) -> httpx.Response:
        return http.post("/schedule", json={"command": "true", **fields})

    def batch(*queues: str) -> httpx.Response:
        tasks = [{"command": "true", "queue": q} for q in queues]
        return http.post("/tasks/batch", json={"tasks": tasks})

    assert batch("default", "default").status_code == 201
    assert schedule().status_code == 201
    refused(schedule(), "queue default is at 3 of 3")
    refused(batch("other", "default"), "queue default is at 3 of 3")
    assert queued(url) == {"default": 3}
    assert schedule(queue="other").status_code == 201
    refused(batch("other", "other"), "the backlog is at 4 of 5")
    assert batch("other").status_code == 201
    refused(schedule(queue="third"), "the backlog is at 5 of 5")
    refused(
        http.post("/schedule", json={"command": "true"}, headers={"Idempotency-Key": "k"}),
        "backlog",
    )
    assert queued(url) == {"default": 3, "other": 2}
    # Room again once tasks leave the queue (here: cancelled).
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM tasks WHERE queue = 'other' LIMIT 1").fetchone()
    assert row is not None
    task_id = row[0]
    assert http.post(f"/tasks/{task_id}/cancel").status_code == 200

    def accepted() -> bool:
        return schedule(queue="third").status_code == 201

    wait_for(accepted, timeout=10, message="room after a cancel")
    assert queued(url) == {"default": 3, "other": 1, "third": 1}


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--max-queued=0"], {}),
        (["--max-queued-per-queue=-1"], {}),
        ([], {"SKIPLOCK_MAX_QUEUED": "lots"}),
    ],
)
def test_bad_limits_are_refused_at_start(argv, env):
    with pytest.raises(ConfigError):
        config.load(argv, {"DATABASE_URL": "postgresql://localhost/x", **env})


def test_limits_come_from_flags_or_the_environment():
    base = {"DATABASE_URL": "postgresql://localhost/x"}
    assert config.load([], base).backlog.enabled is False
    loaded = config.load(["--max-queued=10"], {**base, "SKIPLOCK_MAX_QUEUED_PER_QUEUE": "4"})
    assert (loaded.backlog.total, loaded.backlog.per_queue) == (10, 4)
