"""Concurrency limits on a real cluster with two coordinators racing: at most concurrency_limit
tasks with one concurrency_key run at once across the fleet, measured by the commands
themselves; plus validation through the HTTP API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from devtools.cluster import wait_for
from tests.support.overlap import OverlapProbe


def test_two_coordinators_never_run_more_than_the_limit(cluster_factory, tmp_path: Path):
    cluster = cluster_factory(workers=2, coordinators=2, slots=4)
    probe = OverlapProbe(tmp_path)
    limited: list[dict[str, Any]] = [
        {"command": probe.command, "concurrency_key": "db-migrations", "concurrency_limit": 2}
        for _ in range(12)
    ]
    free = [{"command": "sleep 0.2"} for _ in range(8)]
    response = cluster.http.post("/tasks/batch", json={"tasks": limited + free})
    assert response.status_code == 201, response.text
    ids = response.json()["task_ids"]

    def all_succeeded() -> bool:
        with psycopg.connect(cluster.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM tasks WHERE status = 'succeeded' AND id = ANY(%s::uuid[])",
                (ids,),
            ).fetchone()
        return row is not None and row[0] == len(ids)

    wait_for(all_succeeded, timeout=90, message="every task succeeded")
    seen = probe.seen()
    assert len(seen) == 12
    assert max(seen) <= 2, f"more than 2 ran at once: {seen}"
    with psycopg.connect(cluster.database_url) as conn:
        row = conn.execute(
            "SELECT running FROM concurrency_keys WHERE key = 'db-migrations'"
        ).fetchone()
    assert row == (0,)  # every claim counted, every end released


def test_concurrency_settings_are_validated_and_shown(http):
    made = http.post(
        "/schedule",
        json={"command": "true", "delay_seconds": 60, "concurrency_key": "a/b:c",
              "concurrency_limit": 3},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    detail = http.get(f"/tasks/{made.json()['task_id']}").json()
    assert (detail["concurrency_key"], detail["concurrency_limit"]) == ("a/b:c", 3)
    bad: list[dict[str, Any]] = [
        {"concurrency_key": "k"},
        {"concurrency_limit": 2},
        {"concurrency_key": "", "concurrency_limit": 1},
        {"concurrency_key": "has space", "concurrency_limit": 1},
        {"concurrency_key": "k", "concurrency_limit": 0},
        {"concurrency_key": "k", "concurrency_limit": 10_001},
    ]
    for fields in bad:
        response = http.post("/schedule", json={"command": "true", **fields})
        assert response.status_code == 422, (fields, response.text)
        assert "concurrency" in response.text
    body = {"name": "limited", "cron": "0 0 1 1 *", "command": "true",
            "concurrency_key": "nightly", "concurrency_limit": 1}  # fmt: skip
    schedule = http.post("/schedules", json=body).json()
    assert schedule["concurrency_key"] == "nightly"
    half = http.patch(f"/schedules/{schedule['id']}", json={"concurrency_key": None})
    assert half.status_code == 422 and "together" in half.text
    cleared = http.patch(
        f"/schedules/{schedule['id']}", json={"concurrency_key": None, "concurrency_limit": None}
    )
    assert cleared.status_code == 200 and cleared.json()["concurrency_key"] is None
    run = http.post(f"/schedules/{schedule['id']}/trigger").json()
    assert http.get(f"/tasks/{run['task']['task_id']}").json()["concurrency_key"] is None
