"""`skiplock workers`, `stats`, `logs` and `tasks ls` with filters, run as subprocesses against
a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest

from devtools.cluster import REPO_ROOT, Cluster, service_env, wait_for
from devtools.tasks import submit
from tests.support.cli import cli_json, describe, run_cli


@pytest.fixture
def url(module_cluster: Cluster) -> str:
    return module_cluster.scheduler_url


def finished(cluster: Cluster, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = cluster.http.get(f"/tasks/{task_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    found = wait_for(done, timeout=60, message=f"task {task_id} to finish")
    assert found is not None
    return found


def test_workers_lists_the_fleet_and_shows_one(module_cluster: Cluster, url: str) -> None:
    fleet = cli_json("workers", url=url)
    assert {"worker-1", "worker-2"} <= {w["id"] for w in fleet["workers"]}
    table = run_cli("workers", url=url)
    assert table.returncode == 0, describe(table)
    assert "worker-1" in table.stdout and "BUSY" in table.stdout and "ok" in table.stdout

    task_id = submit(module_cluster, "sleep 30")
    holder = wait_for(
        lambda: module_cluster.http.get(f"/tasks/{task_id}").json()["worker_id"],
        30,
        message="the task to be dispatched",
    )
    detail = run_cli("workers", holder, url=url)
    assert detail.returncode == 0, describe(detail)
    assert task_id in detail.stdout and "sleep 30" in detail.stdout, describe(detail)
    assert module_cluster.http.post(f"/tasks/{task_id}/cancel").status_code == 200

    missing = run_cli("workers", "no-such-worker", url=url)
    assert missing.returncode == 1
    assert "404" in missing.stderr and "no-such-worker" in missing.stderr, describe(missing)


def test_stats_summarises_and_prints_the_apis_json(module_cluster: Cluster, url: str) -> None:
    finished(module_cluster, submit(module_cluster, "true"))
    summary = run_cli("stats", url=url)
    assert summary.returncode == 0, describe(summary)
    for words in ("backlog", "slots busy", "start delay", "SUCCEEDED"):
        assert words in summary.stdout, describe(summary)
    body = cli_json("stats", url=url)
    assert body["fleet"]["workers"] >= 2
    assert sum(w["succeeded"] for w in body["finished"]) >= 1


def test_logs_prints_a_finished_tasks_output(module_cluster: Cluster, url: str) -> None:
    task_id = submit(module_cluster, "echo out; echo err >&2; printf 'no newline'")
    finished(module_cluster, task_id)
    result = run_cli("logs", task_id, url=url)
    assert result.returncode == 0, describe(result)
    assert result.stdout == "out\nerr\nno newline"


def test_logs_follow_prints_output_as_it_comes_until_the_end(
    module_cluster: Cluster, url: str
) -> None:
    task_id = submit(module_cluster, "echo first; sleep 5; echo second")
    wait_for(
        lambda: module_cluster.http.get(f"/tasks/{task_id}").json()["status"] == "running",
        30,
        message="the task to start",
    )
    follower = subprocess.Popen(
        [sys.executable, "-m", "skiplock_cli", "--url", url, "logs", "-f", task_id],
        cwd=REPO_ROOT,
        env=service_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"  # before the command has ended
        assert module_cluster.http.get(f"/tasks/{task_id}").json()["status"] == "running"
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out == "second\n"


def test_tasks_ls_narrows_by_filters(module_cluster: Cluster, url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    ok = submit(module_cluster, f"echo {tag}")
    bad = submit(module_cluster, f"echo {tag}; exit 3")
    finished(module_cluster, ok)
    finished(module_cluster, bad)
    mine = cli_json("tasks", "ls", "--command", f"echo {tag}", url=url)
    assert {t["task_id"] for t in mine["tasks"]} == {ok, bad}
    failed = cli_json(
        "tasks", "ls", "--command", f"echo {tag}", "--status", "failed", "--status", "cancelled",
        url=url,
    )  # fmt: skip
    assert [t["task_id"] for t in failed["tasks"]] == [bad]
    first = cli_json("tasks", "ls", "--command", f"echo {tag}", "--limit", "1", url=url)
    assert first["next_cursor"]
    rest = cli_json(
        "tasks", "ls", "--command", f"echo {tag}", "--cursor", first["next_cursor"], url=url
    )
    assert [t["task_id"] for t in first["tasks"] + rest["tasks"]] == [bad, ok]


def test_events_prints_changes_as_they_happen(module_cluster: Cluster, url: str) -> None:
    # The stream starts when the CLI connects: the task waits long enough for a slow start.
    task_id = submit(module_cluster, "sleep 0.5", delay_seconds=8)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "skiplock_cli", "--url", url, "events", "--json", "--task", task_id],
        cwd=REPO_ROOT,
        env=service_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = threading.Timer(60, watcher.kill)  # a stream that never says it: readline ends
    deadline.start()
    try:
        assert watcher.stdout is not None
        seen: list[dict[str, Any]] = []
        while not any(e["kind"] == "task" and e["data"]["status"] == "succeeded" for e in seen):
            line = watcher.stdout.readline()
            assert line, watcher.stderr.read() if watcher.stderr else "events ended"
            seen.append(json.loads(line))
    finally:
        deadline.cancel()
        watcher.kill()
        watcher.wait(10)
    assert {e["task_id"] for e in seen} == {task_id}
    assert [e["data"]["status"] for e in seen if e["kind"] == "attempt"][-1] == "succeeded"


def test_logs_follow_waits_for_a_queued_task_to_start(module_cluster: Cluster, url: str) -> None:
    task_id = submit(module_cluster, "echo at last", delay_seconds=2)
    result = run_cli("logs", "-f", task_id, url=url, timeout=60)
    assert result.returncode == 0, describe(result)
    assert result.stdout == "at last\n"
