"""GET /stats and /stats/history on real processes: the queue of a scheduler alone, the
outcomes, delays, fleet and ticks of a running cluster, and plans that read only recent rows."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

import psycopg
import pytest

from devtools.cluster import Cluster, wait_for
from devtools.tasks import submit
from store import stats

Db = psycopg.Connection[Any]


def get_stats(cluster: Cluster) -> dict[str, Any]:
    response = cluster.http.get("/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished_in(body: dict[str, Any], minutes: int) -> dict[str, int]:
    (window,) = [w for w in body["finished"] if w["minutes"] == minutes]
    return dict(window)


def test_the_backlog_and_the_age_of_its_oldest_due_task(cluster_factory):
    alone = cluster_factory(start=False)  # no coordinator: nothing leaves the queue
    alone.start_scheduler()
    empty = get_stats(alone)
    assert empty["tasks"] == {
        "queued_due": 0, "queued_later": 0, "queued_unserved": 0, "dispatched": 0, "running": 0,
        "waiting": 0,
    }  # fmt: skip
    assert empty["oldest_due_age_seconds"] is None
    assert empty["start_delay"]["samples"] == 0 and empty["start_delay"]["p50"] is None
    for _ in range(3):
        submit(alone, "echo due")
    submit(alone, "echo later", delay_seconds=3600)
    body = wait_for(
        lambda: (b := get_stats(alone))["oldest_due_age_seconds"] > 0.5 and b,
        30,
        message="the oldest due task to age",
    )
    assert body["tasks"]["queued_due"] == 3
    assert body["tasks"]["queued_unserved"] == 3  # no worker runs at all
    assert body["tasks"]["queued_later"] == 1
    assert body["oldest_due_age_seconds"] < 120
    assert body["fleet"] == {"workers": 0, "lost": 0, "draining": 0, "slots": 0, "busy": 0}


def test_outcomes_delays_fleet_and_ticks_of_a_running_cluster(module_cluster):
    shared = module_cluster
    for _ in range(4):
        submit(shared, "true")
    for _ in range(2):
        submit(shared, "exit 1")
    schedule = shared.http.post(
        "/schedules", json={"name": "stats-every-second", "cron": "* * * * * *", "command": "true"}
    )
    assert schedule.status_code == 201, schedule.text

    def settled() -> dict[str, Any]:
        body = get_stats(shared)
        last_minute = finished_in(body, 1)
        enough = last_minute["succeeded"] >= 4 and last_minute["failed"] >= 2
        return body if enough and body["ticks"]["started"] >= 2 else {}

    body = wait_for(settled, 60, message=lambda: f"outcomes in /stats\n{shared.logs()}")
    assert shared.http.delete(f"/schedules/{schedule.json()['id']}").status_code in (200, 204)
    windows = [finished_in(body, m) for m in (1, 5, 15, 60)]
    for shorter, longer in itertools.pairwise(windows):
        assert all(shorter[k] <= longer[k] for k in ("succeeded", "failed", "cancelled"))
    delay = body["start_delay"]
    assert delay["minutes"] == 5 and delay["samples"] >= 6
    assert -1 < delay["p50"] <= delay["p95"] <= delay["p99"] < 30
    assert body["fleet"]["workers"] >= 2 and body["fleet"]["slots"] >= 8
    assert 0 <= body["fleet"]["busy"] <= body["fleet"]["slots"]
    assert body["ticks"]["minutes"] == 15
    assert set(body["ticks"]) >= {"started", "skipped_overlap", "missed"}
    assert body["at"].endswith("Z")

    history = shared.http.get("/stats/history", params={"minutes": 5})
    assert history.status_code == 200, history.text
    minutes = history.json()["minutes"]
    assert len(minutes) == 5
    starts = [datetime.fromisoformat(m["minute"]) for m in minutes]
    assert all((b - a).total_seconds() == 60 for a, b in itertools.pairwise(starts))
    assert sum(m["succeeded"] for m in minutes) >= 4
    assert sum(m["failed"] for m in minutes) >= 2
    assert sum(m["submitted"] for m in minutes) >= 6
    busy = [m for m in minutes if m["succeeded"]]
    assert all(m["start_delay_p50"] <= m["start_delay_p99"] for m in busy)


@pytest.mark.parametrize("minutes", ["0", "361", "x", "1.5"])
def test_history_refuses_a_window_it_does_not_serve(module_cluster, minutes):
    response = module_cluster.http.get("/stats/history", params={"minutes": minutes})
    assert response.status_code == 422
    assert response.json()["detail"]


def plan_nodes(db: Db, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    row = db.execute(f"EXPLAIN (FORMAT JSON) {statement}", params).fetchone()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes, stack = [], [document[0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def test_stats_read_recent_rows_through_indexes_not_the_whole_table(db):
    # A month of finished tasks, one a minute, and fresh statistics.
    db.execute(
        "INSERT INTO tasks (id, command, status, created_at, scheduled_at, run_at, started_at,"
        "                   completed_at)"
        " SELECT gen_random_uuid(), 'true', 'succeeded', t, t, t, t, t + interval '1 second'"
        " FROM generate_series(now() - interval '30 days', now() - interval '1 minute',"
        "                      interval '1 minute') AS t"
    )
    db.execute("ANALYZE tasks")
    statements = [
        (stats.STATS, {"recent": stats.RECENT_MINUTES, "tick_minutes": stats.TICK_MINUTES}),
        (stats.HISTORY, {"minutes": 60}),
    ]
    for statement, params in statements:
        scans = [n for n in plan_nodes(db, statement, params) if n.get("Relation Name") == "tasks"]
        assert scans, statement
        assert not [n for n in scans if n["Node Type"] == "Seq Scan"], statement
    with db.transaction(force_rollback=True):
        db.execute("DROP INDEX tasks_completed_at")
        scans = plan_nodes(db, *statements[0])
        assert any(
            n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "tasks" for n in scans
        )
