"""Priorities through the HTTP API and on a real cluster: validated, shown, inherited from a
schedule, and a backlog drained highest priority first (the claim order itself, aging
included, is tested on the store in tests/test_store.py)."""

from __future__ import annotations

from typing import Any

import psycopg

from devtools.cluster import wait_for


def test_priority_is_validated_and_shown(http):
    made = http.post("/schedule", json={"command": "true", "priority": -7, "delay_seconds": 600})
    assert made.status_code == 201, made.text
    detail = http.get(f"/tasks/{made.json()['task_id']}").json()
    assert detail["priority"] == -7
    plain = http.post("/schedule", json={"command": "true", "delay_seconds": 600}).json()
    assert http.get(f"/tasks/{plain['task_id']}").json()["priority"] == 0
    for bad in (101, -101, 1.5, "high", None):
        response = http.post("/schedule", json={"command": "true", "priority": bad})
        assert response.status_code == 422, (bad, response.text)
        assert "priority" in response.text
    batch = http.post(
        "/tasks/batch", json={"tasks": [{"command": "true", "priority": 100}, {"command": "x"}]}
    )
    first, second = batch.json()["task_ids"]
    assert http.get(f"/tasks/{first}").json()["priority"] == 100
    assert http.get(f"/tasks/{second}").json()["priority"] == 0


def test_a_schedules_runs_take_its_priority(http):
    body = {"name": "prioritised", "cron": "0 0 1 1 *", "command": "true", "priority": 42}
    created = http.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["priority"] == 42
    patched = http.patch(f"/schedules/{schedule['id']}", json={"priority": -3})
    assert patched.status_code == 200 and patched.json()["priority"] == -3
    run = http.post(f"/schedules/{schedule['id']}/trigger")
    assert run.status_code == 201, run.text
    assert http.get(f"/tasks/{run.json()['task']['task_id']}").json()["priority"] == -3
    refused = http.patch(f"/schedules/{schedule['id']}", json={"priority": 200})
    assert refused.status_code == 422


def test_a_backlog_drains_highest_priority_first(cluster_factory):
    cluster = cluster_factory(workers=0)
    priorities = [0, 5, -5, 100, 5, -100, 0, 50]
    tasks: list[dict[str, Any]] = [
        {"command": "true", "priority": p} for p in priorities
    ]
    ids = cluster.http.post("/tasks/batch", json={"tasks": tasks}).json()["task_ids"]
    cluster.start_worker("worker-1", slots=1)  # one slot: tasks start one after another

    def started_order() -> list[str] | None:
        with psycopg.connect(cluster.database_url) as conn:
            rows = conn.execute(
                "SELECT id::text FROM tasks WHERE status = 'succeeded' ORDER BY picked_at"
            ).fetchall()
        return [r[0] for r in rows] if len(rows) == len(ids) else None

    order = wait_for(started_order, timeout=60, message="every task succeeded")
    assert order is not None
    by_id = dict(zip(ids, priorities, strict=True))
    assert [by_id[i] for i in order] == sorted(priorities, reverse=True)
