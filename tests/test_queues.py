"""Queues and labels on a real cluster: a task goes only to a worker that serves its queue and
has its labels; one no live worker can take stays queued and says why; queues pause and
resume; bad names and labels are refused with nothing written."""

from __future__ import annotations

from typing import Any

import psycopg

from devtools.cluster import Cluster, wait_for


def submit(cluster: Cluster, tasks: list[dict[str, Any]]) -> list[str]:
    response = cluster.http.post("/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 201, response.text
    ids: list[str] = response.json()["task_ids"]
    return ids


def finished(cluster: Cluster, ids: list[str]) -> dict[str, dict[str, Any]] | None:
    tasks = {i: cluster.http.get(f"/tasks/{i}").json() for i in ids}
    return tasks if all(t["status"] == "succeeded" for t in tasks.values()) else None


def test_tasks_go_only_to_workers_of_their_queue_with_their_labels(cluster_factory):
    cluster = cluster_factory(workers=0)
    cluster.start_worker("plain", slots=2)
    cluster.start_worker("gpu-a100", slots=2, extra_args=["--queues=gpu", "--labels=gpu=a100"])
    cluster.start_worker(
        "gpu-both", slots=2, extra_args=["--queues=gpu,default", "--labels=gpu=h100,zone=eu"]
    )
    spec: list[tuple[dict[str, Any], set[str]]] = [
        ({}, {"plain", "gpu-both"}),
        ({"queue": "gpu"}, {"gpu-a100", "gpu-both"}),
        ({"queue": "gpu", "labels": {"gpu": "a100"}}, {"gpu-a100"}),
        ({"queue": "gpu", "labels": {"gpu": "h100"}}, {"gpu-both"}),
        ({"labels": {"zone": "eu"}}, {"gpu-both"}),
    ]
    tasks = [{"command": "true", **fields} for fields, _ in spec for _ in range(6)]
    allowed = [workers for _, workers in spec for _ in range(6)]
    ids = submit(cluster, tasks)
    done = wait_for(lambda: finished(cluster, ids), timeout=60, message="every task succeeded")
    assert done is not None
    for task_id, workers in zip(ids, allowed, strict=True):
        assert done[task_id]["worker_id"] in workers, (done[task_id], workers)
    assert done[ids[6]]["queue"] == "gpu" and done[ids[12]]["labels"] == {"gpu": "a100"}
    with psycopg.connect(cluster.database_url) as conn:
        rows: dict[str, list[str]] = dict(conn.execute("SELECT id, queues FROM workers").fetchall())
    assert rows == {"plain": ["default"], "gpu-a100": ["gpu"], "gpu-both": ["default", "gpu"]}


def test_a_task_no_live_worker_can_take_waits_and_says_why(cluster_factory):
    cluster = cluster_factory(workers=1)
    nobody, unlabelled = submit(
        cluster,
        [{"command": "true", "queue": "batch"}, {"command": "true", "labels": {"gpu": "a100"}}],
    )
    (served,) = submit(cluster, [{"command": "true"}])
    wait_for(lambda: finished(cluster, [served]), timeout=30, message="the served task ran")
    first = cluster.http.get(f"/tasks/{nobody}").json()
    assert first["status"] == "queued"
    assert first["waiting_for"] == "no live worker serves queue batch"
    second = cluster.http.get(f"/tasks/{unlabelled}").json()
    assert second["status"] == "queued"
    assert second["waiting_for"] == 'no live worker of queue default has the labels {"gpu": "a100"}'
    queues = {q["name"]: q for q in cluster.http.get("/queues").json()["queues"]}
    assert queues["batch"] == {
        "name": "batch", "paused": False, "max_running": None, "queued": 1, "due": 1,
        "running": 0, "workers": 0,
        "waiting": 0,
    }  # fmt: skip
    assert queues["default"]["workers"] == 1 and queues["default"]["queued"] == 1
    stats = cluster.http.get("/stats").json()["tasks"]
    assert stats["queued_due"] == 2 and stats["queued_unserved"] == 2
    cluster.start_worker("batcher", slots=1, extra_args=["--queues=batch"])
    wait_for(lambda: finished(cluster, [nobody]), timeout=30, message="the batch task ran")


def test_a_paused_queue_keeps_its_tasks_until_resumed(cluster_factory):
    cluster = cluster_factory(workers=1)
    paused = cluster.http.post("/queues/slow/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    held, other = submit(cluster, [{"command": "true", "queue": "slow"}, {"command": "true"}])
    cluster.start_worker("slow-worker", slots=1, extra_args=["--queues=slow"])
    wait_for(lambda: finished(cluster, [other]), timeout=30, message="the default task ran")
    task = cluster.http.get(f"/tasks/{held}").json()
    assert task["status"] == "queued" and task["waiting_for"] == "queue slow is paused"
    resumed = cluster.http.post("/queues/slow/resume")
    assert resumed.json() == {
        "name": "slow", "paused": False, "max_running": None, "queued": 1, "due": 1,
        "running": 0, "workers": 1,
        "waiting": 0,
    }  # fmt: skip
    wait_for(lambda: finished(cluster, [held]), timeout=30, message="the resumed task ran")


def test_bad_queues_and_labels_are_refused_and_nothing_is_written(http, api):
    with psycopg.connect(api.database_url) as conn:
        before = conn.execute("SELECT count(*) FROM tasks").fetchone()
    bad: list[dict[str, Any]] = [
        {"queue": ""},
        {"queue": "has space"},
        {"queue": "x" * 65},
        {"queue": 7},
        {"labels": {"": "v"}},
        {"labels": {"k": ""}},
        {"labels": {"k": "a,b"}},
        {"labels": {"k": 1}},
        {"labels": {f"k{i}": "v" for i in range(17)}},
        {"labels": ["gpu"]},
    ]
    for fields in bad:
        response = http.post("/schedule", json={"command": "true", **fields})
        assert response.status_code == 422, (fields, response.text)
        assert ("queue" in response.text) or ("label" in response.text), response.text
    batch = http.post("/tasks/batch", json={"tasks": [{"command": "true", **f} for f in bad]})
    assert batch.status_code == 422
    assert {issue["loc"][2] for issue in batch.json()["detail"]} == set(range(len(bad)))
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == before
    assert http.post("/queues/has%20space/pause").status_code == 422
    schedule = {"name": "q", "cron": "* * * * *", "command": "true", "queue": "gpu",
                "labels": {"gpu": "a100"}}  # fmt: skip
    created = http.post("/schedules", json=schedule)
    assert created.status_code == 201, created.text
    assert created.json()["queue"] == "gpu" and created.json()["labels"] == {"gpu": "a100"}
