"""What a command sees and what it leaves behind, on a real cluster with real bash: its
environment holds the minimal base, the worker's --pass-env allow-list and the attempt's
identity, never the cluster's secrets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devtools.cluster import Cluster, wait_for
from devtools.tasks import submit

SECRETS = ("SKIPLOCK_CLUSTER_TOKEN", "DATABASE_URL", "WORKER_ID", "WORKER_PRIVATE")


@pytest.fixture(scope="module")
def contained(
    request: pytest.FixtureRequest,
    module_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """One worker that passes SHARED_SETTING on to commands and keeps WORKER_PRIVATE."""
    cluster = Cluster(
        module_database_url,
        tmp_path_factory.mktemp("contained"),
        env={"SHARED_SETTING": "visible", "WORKER_PRIVATE": "hidden"},
    )
    failed_before = request.session.testsfailed
    try:
        cluster.start_coordinator()
        cluster.start_scheduler()
        cluster.start_worker("worker-1", extra_args=["--pass-env=SHARED_SETTING,NOT_SET_HERE"])
        yield cluster
    finally:
        if request.session.testsfailed > failed_before:
            print(cluster.logs())
        cluster.stop()


def finished(cluster: Cluster, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        body: dict[str, Any] = cluster.http.get(f"/tasks/{task_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else {}

    return wait_for(done, 60, interval=0.05, message=lambda: f"{task_id}\n{cluster.logs()}")


def output(cluster: Cluster, task_id: str) -> str:
    response = cluster.http.get(f"/tasks/{task_id}/output")
    assert response.status_code == 200, response.text
    return response.text


def environment_of(cluster: Cluster, **fields: Any) -> dict[str, str]:
    """Runs `env -0` as a task and returns what the command saw."""
    task_id = submit(cluster, "env -0", **fields)
    assert finished(cluster, task_id)["status"] == "succeeded"
    pairs = [item.split("=", 1) for item in output(cluster, task_id).split("\0") if item]
    return {name: value for name, value in pairs} | {"_task_id": task_id}


def test_a_command_sees_the_base_the_allow_list_and_its_identity_but_no_secret(contained):
    env = environment_of(contained)
    leaked = [name for name in env if name in SECRETS or name.startswith("POSTGRES_")]
    assert not leaked, env
    assert not [v for v in env.values() if v == contained.token], env
    assert env["SHARED_SETTING"] == "visible"
    assert "NOT_SET_HERE" not in env
    assert env["TZ"] == "UTC" and env["PATH"] and env["HOME"] and env["LANG"]
    assert env["SKIPLOCK_TASK_ID"] == env["_task_id"]
    assert env["SKIPLOCK_ATTEMPT"] == "1"
    skiplock = {name for name in env if name.startswith("SKIPLOCK_")}
    assert env["SKIPLOCK_WORKER_ID"] == "worker-1"
    assert skiplock == {"SKIPLOCK_TASK_ID", "SKIPLOCK_ATTEMPT", "SKIPLOCK_WORKER_ID"}, env
