"""End to end: the scheduler, coordinator and workers as real processes on free ports, running
real commands. Tests that only submit independent tasks share one cluster; tests that stop or
freeze a process get a cluster of their own."""

from __future__ import annotations

import signal
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.cluster import LOOPBACK, Cluster, wait_for

Db = psycopg.Connection[Any]
FINISHED = ("succeeded", "failed")
# Lateness bound: only fails when something is badly wrong (the target, ~1 s, is a benchmark).
VERY_LATE = timedelta(seconds=5)


@pytest.fixture(scope="module")
def shared(module_cluster: Cluster) -> Cluster:
    """One cluster (coordinator, scheduler, worker-1 and worker-2 with 4 slots each)."""
    wait_registered(module_cluster, ["worker-1", "worker-2"])
    return module_cluster


def connect(cluster: Cluster) -> psycopg.Connection[Any]:
    return psycopg.connect(cluster.database_url, autocommit=True)


def wait_registered(cluster: Cluster, workers: list[str], since: datetime | None = None) -> None:
    """Until each worker has heartbeated (after `since`, when given) and is not lost."""

    def registered() -> bool:
        with connect(cluster) as db:
            rows = db.execute(
                "SELECT count(*) FROM workers WHERE id = ANY(%s) AND lost_at IS NULL"
                " AND last_heartbeat_at > coalesce(%s::timestamptz, '-infinity')",
                (workers, since),
            ).fetchone()
        return rows is not None and rows[0] == len(workers)

    wait_for(registered, 30, interval=0.1, message=lambda: f"{workers} to heartbeat")


def submit(cluster: Cluster, command: str, **fields: Any) -> str:
    response = cluster.http.post("/schedule", json={"command": command, **fields})
    assert response.status_code == 201, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def status(cluster: Cluster, task_id: str) -> dict[str, Any]:
    response = cluster.http.get("/status", params={"task_id": task_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_finished(
    cluster: Cluster, task_ids: list[str], timeout: float = 30
) -> list[dict[str, Any]]:
    """Every task's /status once all of them have finished."""

    def all_finished() -> list[dict[str, Any]]:
        states = [status(cluster, t) for t in task_ids]
        return states if all(s["status"] in FINISHED for s in states) else []

    return wait_for(
        all_finished,
        timeout,
        interval=0.05,
        message=lambda: (
            f"tasks to finish: {[status(cluster, t) for t in task_ids]}\n{cluster.logs()}"
        ),
    )


def ts(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def output_of(state: dict[str, Any]) -> str:
    return Path(state["output_path"]).read_text()


# --- one shared cluster ---------------------------------------------------------------------


def test_delayed_tasks_start_at_their_time_never_early(shared):
    submitted = [submit(shared, "true", delay_seconds=d) for d in (0.3, 1, 1.5, 2.5)]
    at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    submitted.append(submit(shared, "true", scheduled_at=at))
    for state in wait_finished(shared, submitted):
        assert state["status"] == "succeeded", state
        scheduled, picked, started = (
            ts(state[k]) for k in ("scheduled_at", "picked_at", "started_at")
        )
        assert picked >= scheduled, state
        assert started >= scheduled, f"started {scheduled - started} early: {state}"
        assert started - scheduled < VERY_LATE, state


def test_output_file_is_named_for_worker_and_task_and_holds_stdout_and_stderr(shared):
    task_id = submit(shared, "echo to-stdout; echo to-stderr >&2")
    (state,) = wait_finished(shared, [task_id])
    assert (state["status"], state["exit_code"]) == ("succeeded", 0)
    path = Path(state["output_path"])
    worker = state["worker_id"]
    assert path == shared.log_dir / "worker_output" / worker / f"{worker}-{task_id}-1.log"
    assert output_of(state).splitlines() == ["to-stdout", "to-stderr"]
    assert state["failed_at"] is None
    assert ts(state["completed_at"]) >= ts(state["started_at"])


def test_a_failing_command_is_recorded_with_its_exit_code_and_output(shared):
    task_id = submit(shared, "echo before failing; echo why >&2; exit 7")
    (state,) = wait_finished(shared, [task_id])
    assert (state["status"], state["exit_code"]) == ("failed", 7)
    assert state["failed_at"] is not None and state["completed_at"] is not None
    assert output_of(state).splitlines() == ["before failing", "why"]
    killed = submit(shared, "kill -TERM $$")
    (state,) = wait_finished(shared, [killed])
    assert (state["status"], state["exit_code"]) == ("failed", 128 + signal.SIGTERM)


def test_a_command_longer_than_four_seconds_completes(shared):
    task_id = submit(shared, "sleep 5; echo slept")
    (state,) = wait_finished(shared, [task_id], timeout=40)
    assert (state["status"], state["exit_code"]) == ("succeeded", 0)
    assert ts(state["completed_at"]) - ts(state["started_at"]) >= timedelta(seconds=5)
    assert output_of(state) == "slept\n"


def test_both_workers_get_work(shared):
    submitted = [submit(shared, "sleep 0.2") for _ in range(8)]
    states = wait_finished(shared, submitted)
    assert {s["status"] for s in states} == {"succeeded"}
    assert {s["worker_id"] for s in states} == {"worker-1", "worker-2"}


def test_bad_requests_get_a_4xx_through_the_real_service(shared):
    bad = [
        shared.http.post("/schedule", content=b"{", headers={"content-type": "application/json"}),
        shared.http.post("/schedule", json={"command": ""}),
        shared.http.post("/schedule", json={"command": "true", "delay_seconds": -5}),
        shared.http.post("/schedule", content=b'{"command": "true"}'),  # no content type
        shared.http.get("/status", params={"task_id": "nope"}),
        shared.http.get("/status"),
    ]
    for response in bad:
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["detail"]
    missing = shared.http.get("/status", params={"task_id": "00000000-0000-0000-0000-000000000000"})
    assert missing.status_code == 404


def test_workers_heartbeat_a_dialable_address(shared):
    with connect(shared) as db:
        rows = dict(db.execute("SELECT id, address FROM workers").fetchall())
    assert rows == {w: f"{LOOPBACK}:{port}" for w, port in shared.worker_ports.items()}


# --- clusters of their own ------------------------------------------------------------------


def test_a_worker_bound_to_all_interfaces_advertises_its_hostname(cluster_factory, db):
    hostname = socket.gethostname()
    try:
        socket.getaddrinfo(hostname, None)
    except OSError:
        pytest.skip(f"this machine's hostname {hostname!r} does not resolve")
    cluster = cluster_factory(workers=0)
    # No WORKER_ADDRESS, bound to every interface (allowed: the cluster has a token), on a
    # port the system chooses: the worker advertises the port it really bound.
    cluster.start_worker("roaming", extra_args=["--worker_port=:0"], env={"WORKER_ADDRESS": None})
    port = cluster.worker_ports["roaming"]
    assert port != 0
    wait_registered(cluster, ["roaming"])
    row = db.execute("SELECT address FROM workers WHERE id = 'roaming'").fetchone()
    assert row == (f"{hostname}:{port}",)
    # The coordinator reaches it there.
    (state,) = wait_finished(cluster, [submit(cluster, "echo reached")])
    assert (state["status"], state["worker_id"]) == ("succeeded", "roaming")


def test_a_worker_that_stops_heartbeating_gets_no_new_work(cluster_factory, db):
    cluster = cluster_factory(workers=2, slots=4)
    wait_registered(cluster, ["worker-1", "worker-2"])
    frozen = cluster.workers["worker-1"]
    frozen.send_signal(signal.SIGSTOP)
    try:

        def declared_lost() -> bool:
            row = db.execute("SELECT lost_at FROM workers WHERE id = 'worker-1'").fetchone()
            return row is not None and row[0] is not None

        wait_for(declared_lost, 15, interval=0.1, message="worker-1 to be declared lost")
        submitted = [submit(cluster, "echo after") for _ in range(6)]
        states = wait_finished(cluster, submitted)
        assert [s["status"] for s in states] == ["succeeded"] * 6
        assert {s["worker_id"] for s in states} == {"worker-2"}
        offered = db.execute(
            "SELECT count(*) FROM attempts WHERE worker_id = 'worker-1' AND task_id = ANY(%s)",
            (submitted,),
        ).fetchone()
        assert offered == (0,), "the silent worker was offered work"
    finally:
        frozen.send_signal(signal.SIGCONT)
    # Heartbeating again, it is live again.
    wait_registered(cluster, ["worker-1"], since=datetime.now(UTC))


def test_a_coordinator_restart_is_survived(cluster_factory, db):
    cluster = cluster_factory(workers=2, slots=4)
    (warm,) = wait_finished(cluster, [submit(cluster, "true")])
    assert warm["status"] == "succeeded"
    (coordinator,) = cluster.coordinators
    coordinator.kill()
    coordinator.wait(10)
    while_down = [submit(cluster, f"echo while down {i}") for i in range(3)]
    assert {status(cluster, t)["status"] for t in while_down} == {"queued"}
    restarted_at = datetime.now(UTC)
    cluster.start_coordinator(port=cluster.coordinator_ports[0])
    # The same worker processes register again by themselves.
    wait_registered(cluster, ["worker-1", "worker-2"], since=restarted_at)
    assert all(w.is_running() for w in cluster.workers.values())
    after = [submit(cluster, f"echo after restart {i}") for i in range(3)]
    states = wait_finished(cluster, while_down + after)
    assert [s["status"] for s in states] == ["succeeded"] * 6
    assert output_of(states[0]) == "while down 0\n"
