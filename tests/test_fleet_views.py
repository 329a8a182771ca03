"""GET /workers and GET /workers/{id} on a real cluster: what the coordinators recorded from
real heartbeats, the attempts a worker holds, and a killed worker declared lost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import pytest

from devtools.cluster import Cluster, wait_for
from devtools.tasks import submit, wait_status


@pytest.fixture(scope="module")
def shared(module_cluster: Cluster) -> Cluster:
    return module_cluster


def instant(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def workers_by_id(cluster: Cluster) -> dict[str, dict[str, Any]]:
    response = cluster.http.get("/workers")
    assert response.status_code == 200, response.text
    return {w["id"]: w for w in response.json()["workers"]}


def worker(cluster: Cluster, worker_id: str) -> dict[str, Any]:
    response = cluster.http.get(f"/workers/{worker_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_workers_lists_the_fleet_as_heartbeats_recorded_it(shared):
    fleet = workers_by_id(shared)
    assert {"worker-1", "worker-2"} <= set(fleet)
    one = fleet["worker-1"]
    assert one["address"] == f"127.0.0.1:{shared.worker_ports['worker-1']}"
    assert one["slots"] == 4
    assert one["draining"] is False and one["lost"] is False and one["lost_at"] is None
    # Heartbeats come every second; a busy machine may delay one, never by this much.
    assert 0 <= one["heartbeat_age_seconds"] < 15
    assert instant(one["registered_at"]) <= instant(one["last_heartbeat_at"])
    assert list(fleet) == sorted(fleet)


def test_a_worker_shows_the_attempts_it_holds(shared, db_of_shared):
    task_id = submit(shared, "sleep 60")
    wait_status(db_of_shared, task_id, "running", cluster=shared)
    holder = shared.http.get(f"/tasks/{task_id}").json()["worker_id"]
    detail = worker(shared, holder)
    held = {a["task_id"]: a for a in detail["attempts"]}
    assert held[task_id]["attempt"] == 1
    assert held[task_id]["status"] == "running"
    assert held[task_id]["command"] == "sleep 60"
    assert instant(held[task_id]["picked_at"]) <= instant(held[task_id]["started_at"])
    assert detail["busy"] >= 1
    assert workers_by_id(shared)[holder]["busy"] >= 1

    assert shared.http.post(f"/tasks/{task_id}/cancel").status_code == 200

    def released() -> bool:
        return task_id not in {a["task_id"] for a in worker(shared, holder)["attempts"]}

    wait_for(released, 30, message=f"{holder} to let go of {task_id}")


def test_a_silent_worker_is_shown_lost_once_a_coordinator_declares_it(shared):
    proc = shared.start_worker("worker-silent", slots=1)
    assert worker(shared, "worker-silent")["lost"] is False
    proc.kill()
    proc.wait(10)
    lost = wait_for(
        lambda: (w := worker(shared, "worker-silent"))["lost"] and w,
        30,
        message="worker-silent to be declared lost",
    )
    assert instant(lost["lost_at"]) >= instant(lost["last_heartbeat_at"])
    assert lost["heartbeat_age_seconds"] >= 1
    assert lost["attempts"] == []


@pytest.mark.parametrize("worker_id", ["no-such-worker", "nul%00byte", "x" * 300])
def test_an_unknown_worker_is_a_404_with_a_reason(shared, worker_id):
    response = shared.http.get(f"/workers/{worker_id}")
    assert response.status_code in (404, 422), response.text
    assert response.json()["detail"]
    if worker_id == "no-such-worker":
        assert response.status_code == 404
        assert "no-such-worker" in response.json()["detail"]


@pytest.fixture(scope="module")
def db_of_shared(shared: Cluster) -> Any:
    with psycopg.connect(shared.database_url, autocommit=True) as conn:
        yield conn
