"""Task dependencies (`after`) on a real cluster: a chain runs in order and a failure in the
middle ends the rest without running them, a diamond submitted as one batch by index runs in
order, bad references are refused with nothing written, a cancelled dependency ends what waits
on it, a chain of 2,000 ends at once, and waiting tasks are visible in GET /tasks, /stats and
/queues."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools.cluster import Cluster, wait_for

FINISHED = {"succeeded", "failed", "cancelled"}


def schedule(http: httpx.Client, command: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/schedule", json={"command": command, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def batch(http: httpx.Client, tasks: list[dict[str, Any]]) -> list[str]:
    response = http.post("/tasks/batch", json={"tasks": tasks}, timeout=120)
    assert response.status_code == 201, response.text
    ids: list[str] = response.json()["task_ids"]
    return ids


def detail(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(cluster: Cluster, task_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task = detail(cluster.http, task_id)
        return task if task["status"] in FINISHED else None

    found = wait_for(done, timeout, message=lambda: f"task {task_id} to finish\n{cluster.logs()}")
    assert found is not None
    return found


def count_tasks(cluster: Cluster) -> int:
    with psycopg.connect(cluster.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM tasks").fetchone()
    assert row is not None
    return int(row[0])


def test_a_chain_with_a_failure_in_the_middle_never_runs_its_end(
    module_cluster: Cluster, tmp_path: Path
) -> None:
    http = module_cluster.http
    marker = tmp_path / "c-ran"
    a = schedule(http, "sleep 2")
    b = schedule(http, "exit 3", after=[a["task_id"]])
    c = schedule(http, f"touch {marker}", after=[b["task_id"]])
    assert b["status"] == "waiting" and c["status"] == "waiting"
    seen = detail(http, c["task_id"])
    assert seen["after"] == [b["task_id"]]
    assert seen["waiting_for"] == "1 of 1 tasks in after have not succeeded"
    listed = http.get("/tasks", params={"status": "waiting"}).json()["tasks"]
    assert {b["task_id"], c["task_id"]} <= {t["task_id"] for t in listed}

    ended = finished(module_cluster, c["task_id"])
    assert (ended["status"], ended["last_reason"]) == ("failed", "dependency_failed")
    assert ended["attempts"] == [] and ended["waiting_for"] is None
    first, second = detail(http, a["task_id"]), detail(http, b["task_id"])
    assert first["status"] == "succeeded" and second["status"] == "failed"
    assert second["attempts"][0]["started_at"] >= first["completed_at"]
    assert not marker.exists()


def test_a_diamond_of_one_batch_runs_in_order(module_cluster: Cluster, tmp_path: Path) -> None:
    log = tmp_path / "order"
    step = f"sleep 0.3; echo %s >> {log}"
    ids = batch(
        module_cluster.http,
        [
            {"command": step % "d", "after": [1, 2]},  # names later items
            {"command": step % "b", "after": [3]},
            {"command": step % "c", "after": [3]},
            {"command": step % "a"},
        ],
    )
    states = [finished(module_cluster, t) for t in ids]
    assert [s["status"] for s in states] == ["succeeded"] * 4
    assert states[0]["after"] == sorted(ids[1:3])
    lines = log.read_text().split()
    assert lines[0] == "a" and sorted(lines[1:3]) == ["b", "c"] and lines[3] == "d"


def test_cancelling_a_dependency_ends_what_waits_on_it(module_cluster: Cluster) -> None:
    http = module_cluster.http
    a = schedule(http, "true", delay_seconds=3600)
    b = schedule(http, "true", after=[a["task_id"]])
    c = schedule(http, "true", after=[b["task_id"]])
    d = schedule(http, "true", after=[b["task_id"]])
    cancelled = http.post(f"/tasks/{b['task_id']}/cancel")  # a waiting task
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    for task in (c, d):
        assert detail(http, task["task_id"])["last_reason"] == "dependency_failed"
    e = schedule(http, "true", after=[a["task_id"]])
    assert http.post(f"/tasks/{a['task_id']}/cancel").status_code == 200
    assert detail(http, e["task_id"])["last_reason"] == "dependency_failed"
    # a task naming one that already failed or was cancelled ends at once
    late = schedule(http, "true", after=[a["task_id"]])
    assert (late["status"], late["last_reason"]) == ("failed", "dependency_failed")


def test_a_retry_does_not_revive_dependents_but_a_retried_dependent_waits_again(
    module_cluster: Cluster, tmp_path: Path
) -> None:
    http = module_cluster.http
    flag = tmp_path / "second-time"
    a = schedule(http, f"test -e {flag} || {{ touch {flag}; exit 1; }}")
    b = schedule(http, "true", after=[a["task_id"]])
    assert finished(module_cluster, b["task_id"])["last_reason"] == "dependency_failed"
    refused = http.post(f"/tasks/{b['task_id']}/retry")
    assert refused.status_code == 409 and a["task_id"] in refused.json()["detail"]
    assert detail(http, b["task_id"])["status"] == "failed"

    assert http.post(f"/tasks/{a['task_id']}/retry").status_code == 200
    assert finished(module_cluster, a["task_id"])["status"] == "succeeded"
    assert detail(http, b["task_id"])["status"] == "failed"  # not revived
    assert http.post(f"/tasks/{b['task_id']}/retry").status_code == 200
    assert finished(module_cluster, b["task_id"])["status"] == "succeeded"


def test_a_long_chain_failing_at_its_head_ends_at_once(module_cluster: Cluster) -> None:
    tasks: list[dict[str, Any]] = [{"command": "exit 1"}]
    tasks += [{"command": "true", "after": [i]} for i in range(1999)]
    ids = batch(module_cluster.http, tasks)
    stats = module_cluster.http.get("/stats").json()["tasks"]
    assert stats["waiting"] >= 1999 - 1  # the head may not have run yet, the rest wait
    assert finished(module_cluster, ids[0])["status"] == "failed"
    with psycopg.connect(module_cluster.database_url) as conn:
        rows = conn.execute(
            "SELECT status, last_reason, count(*) FROM tasks WHERE id = ANY(%s::uuid[])"
            " GROUP BY 1, 2",
            (ids[1:],),
        ).fetchall()
    assert rows == [("failed", "dependency_failed", 1999)]


@pytest.mark.parametrize(
    ("after", "says"),
    [
        ([0], "names the task itself"),
        ([5], "out of range"),
        (["00000000-0000-4000-8000-000000000000"], "no task with id"),
    ],
)
def test_bad_references_in_a_batch_are_named_and_nothing_is_written(
    module_cluster: Cluster, after: list[Any], says: str
) -> None:
    """Checked once every item is valid on its own: one 422 names every item with a bad
    reference, an unknown id or a repeated idempotency key."""
    before = count_tasks(module_cluster)
    tasks = [
        {"command": "true", "after": after, "idempotency_key": "k"},
        {"command": "true", "after": [str(uuid.uuid4())]},
        {"command": "true"},
        {"command": "true", "idempotency_key": "k", "after": [2]},
    ]
    response = module_cluster.http.post("/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 422, response.text
    found = {i["loc"][2]: i["msg"] for i in response.json()["detail"]}
    assert set(found) == {0, 1, 3}
    assert says in found[0] and "no task with id" in found[1]
    assert "repeats the idempotency_key" in found[3]
    assert count_tasks(module_cluster) == before


def test_cycles_are_refused_naming_every_task_on_them(module_cluster: Cluster) -> None:
    before = count_tasks(module_cluster)
    tasks = [
        {"command": "true", "after": [2]},
        {"command": "true"},
        {"command": "true", "after": [0, 1]},
        {"command": "true", "after": [4]},
        {"command": "true", "after": [3]},
        {"command": "true", "after": [1]},
    ]
    response = module_cluster.http.post("/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 422, response.text
    bad = {i["loc"][2]: i["msg"] for i in response.json()["detail"]}
    assert set(bad) == {0, 2, 3, 4}
    assert bad[0] == bad[2] == "is on a cycle: tasks 0, 2 wait on each other"
    assert bad[3] == "is on a cycle: tasks 3, 4 wait on each other"
    # one cycle through a whole batch: every item named, in a bounded answer
    ring = [{"command": "true", "after": [(i + 1) % 10_000]} for i in range(10_000)]
    response = module_cluster.http.post("/tasks/batch", json={"tasks": ring}, timeout=120)
    assert response.status_code == 422, response.text[:500]
    assert len(response.json()["detail"]) == 10_000 and len(response.content) < 3_000_000
    assert "and 9990 more" in response.json()["detail"][0]["msg"]
    assert count_tasks(module_cluster) == before


def test_after_outside_a_batch_takes_task_ids_only(module_cluster: Cluster) -> None:
    http = module_cluster.http
    before = count_tasks(module_cluster)
    for body, where in [
        ({"command": "true", "after": [0]}, ["body", "after", 0]),
        ({"command": "true", "after": [str(uuid.uuid4())]}, ["body", "after", 0]),
        ({"command": "true", "after": ["not-a-uuid"]}, ["body", "after", 0]),
        ({"command": "true", "after": [str(uuid.uuid4())] * 101}, ["body", "after"]),
    ]:
        response = http.post("/schedule", json=body)
        assert response.status_code == 422, response.text
        assert any(i["loc"][:3] == where for i in response.json()["detail"]), response.text
    schedule_body = {"name": "no-after", "cron": "* * * * *", "command": "true", "after": []}
    response = http.post("/schedules", json=schedule_body)
    assert response.status_code == 422 and "schedules take no `after`" in response.text
    assert count_tasks(module_cluster) == before


def test_waiting_tasks_are_counted_apart_from_the_backlog(module_cluster: Cluster) -> None:
    http = module_cluster.http
    head = schedule(http, "true", delay_seconds=3600, queue="deps-later")
    schedule(http, "true", after=[head["task_id"]], queue="deps-later")
    queues = {q["name"]: q for q in http.get("/queues").json()["queues"]}
    assert queues["deps-later"]["waiting"] == 1 and queues["deps-later"]["due"] == 0
    assert http.get("/stats").json()["tasks"]["waiting"] >= 1
    metrics = http.get("/metrics").text
    (gauge,) = [line for line in metrics.splitlines() if line.startswith("skiplock_tasks_waiting ")]
    assert float(gauge.split()[1]) >= 1
    http.post(f"/tasks/{head['task_id']}/cancel")
