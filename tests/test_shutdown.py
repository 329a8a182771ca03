"""SIGTERM: a worker drains (takes no new work, lets running commands finish up to its drain
timeout, then kills and reports them); coordinators and the scheduler exit 0. Real processes."""

from __future__ import annotations

import signal
import threading

import httpx
import psycopg

from devtools.cluster import port_accepts, wait_for
from devtools.invariants import audit
from devtools.tasks import (
    attempt_rows,
    submit,
    wait_attempt,
    wait_status,
)
from tests.support.pids import group_members, pid_alive, read_pids


def draining(db, worker_id: str) -> bool:
    row = db.execute("SELECT draining FROM workers WHERE id = %s", (worker_id,)).fetchone()
    return bool(row and row[0])


def test_sigterm_lets_a_running_command_finish_and_sends_new_work_elsewhere(
    cluster_factory, db, tmp_path
):
    cluster = cluster_factory(workers=0)
    drained = cluster.start_worker("worker-1", slots=2, extra_args=["--drain-timeout=60"])
    flag = tmp_path / "finish"
    running = submit(cluster, f"until [ -e {flag} ]; do sleep 0.05; done")
    wait_attempt(db, running, 1)
    cluster.start_worker("worker-2", slots=2)

    drained.terminate()
    wait_for(lambda: draining(db, "worker-1"), 10, message="worker-1's heartbeat to say draining")
    later = [submit(cluster, "true") for _ in range(4)]
    for task_id in later:
        wait_status(db, task_id, "succeeded", cluster=cluster)
        assert [a["worker_id"] for a in attempt_rows(db, task_id)] == ["worker-2"]
    assert drained.is_running(), "worker-1 quit before its command finished"

    flag.touch()
    assert drained.wait(20) == 0
    wait_status(db, running, "succeeded", cluster=cluster)
    [attempt] = attempt_rows(db, running)
    assert (attempt["worker_id"], attempt["status"]) == ("worker-1", "succeeded")
    audit(db, [running, *later])


def test_sigterm_kills_commands_still_running_after_the_drain_timeout(
    cluster_factory, db, tmp_path
):
    cluster = cluster_factory(workers=0)
    drained = cluster.start_worker(
        "worker-1", slots=2, extra_args=["--drain-timeout=0.5", "--kill-grace=1"]
    )
    pids = {name: tmp_path / f"{name}.pids" for name in ("retried", "failed")}
    # Hangs on worker-1, succeeds at once anywhere else.
    commands = {
        name: (
            f'if [ "$SKIPLOCK_WORKER_ID" = worker-1 ]; '
            f"then sleep 100 & echo $$ $! > {path}; sleep 100; fi"
        )
        for name, path in pids.items()
    }
    retried = submit(cluster, commands["retried"], max_retries=1, retry_backoff_seconds=0)
    failed = submit(cluster, commands["failed"])
    started = [read_pids(path, 2) for path in pids.values()]
    cluster.start_worker("worker-2", slots=2)

    drained.terminate()
    assert drained.wait(20) == 0
    for group in started:
        assert not any(pid_alive(p) for p in group) and not group_members(group[0])
    wait_status(db, failed, "failed", cluster=cluster)
    wait_status(db, retried, "succeeded", cluster=cluster)
    assert [(a["worker_id"], a["reason"]) for a in attempt_rows(db, failed)] == [
        ("worker-1", "worker_shutdown")
    ]
    assert [(a["worker_id"], a["reason"]) for a in attempt_rows(db, retried)] == [
        ("worker-1", "worker_shutdown"),
        ("worker-2", None),
    ]
    audit(db, [retried, failed], retry_reasons={"worker_shutdown"})


def test_sigterm_makes_coordinator_and_scheduler_exit_0(cluster_factory, db):
    cluster = cluster_factory(workers=1, coordinators=2)
    first = submit(cluster, "true")
    wait_status(db, first, "succeeded", cluster=cluster)

    cluster.coordinators[0].send_signal(signal.SIGTERM)
    assert cluster.coordinators[0].wait(20) == 0
    # The other coordinator carries on: the worker fails over to it.
    second = submit(cluster, "true")
    wait_status(db, second, "succeeded", cluster=cluster)

    assert cluster.scheduler is not None
    cluster.scheduler.send_signal(signal.SIGTERM)
    assert cluster.scheduler.wait(20) == 0
    cluster.coordinators[1].send_signal(signal.SIGTERM)
    assert cluster.coordinators[1].wait(20) == 0
    audit(db, [first, second])


def waiting_on_lock(db, application: str, query_like: str = "%") -> bool:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s AND wait_event_type = 'Lock' AND query LIKE %s",
        (application, query_like),
    ).fetchone()
    return bool(row and row[0])


def test_sigterm_lets_the_scheduler_finish_a_request_in_flight(cluster_factory, database_url, db):
    cluster = cluster_factory(workers=0)
    assert cluster.scheduler is not None and cluster.scheduler_port is not None
    responses: list[httpx.Response] = []
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE tasks IN SHARE MODE")  # holds every INSERT until commit
        client = threading.Thread(
            target=lambda: responses.append(
                httpx.post(
                    f"{cluster.scheduler_url}/schedule", json={"command": "true"}, timeout=30
                )
            )
        )
        client.start()
        wait_for(lambda: waiting_on_lock(db, "skiplock-scheduler"), 10, message="the insert")
        cluster.scheduler.terminate()
        port = cluster.scheduler_port
        wait_for(lambda: not port_accepts(port), 10, message="the scheduler to stop listening")
        assert cluster.scheduler.is_running()
    client.join(30)
    assert cluster.scheduler.wait(20) == 0
    [response] = responses
    assert response.status_code == 201, response.text
    assert db.execute(
        "SELECT status FROM tasks WHERE id = %s", (response.json()["task_id"],)
    ).fetchone() == ("queued",)


def test_sigterm_lets_the_coordinator_finish_a_report_in_flight(
    cluster_factory, database_url, db, tmp_path
):
    cluster = cluster_factory(workers=1)
    flag = tmp_path / "finish"
    task_id = submit(cluster, f"until [ -e {flag} ]; do sleep 0.05; done")
    wait_attempt(db, task_id, 1)
    coordinator = cluster.coordinators[0]

    def listening_for_wakeups() -> bool:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN %'"
        ).fetchone()
        return bool(row and row[0])

    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE attempts IN SHARE MODE")  # holds the report's UPDATE
        flag.touch()
        wait_for(
            # The statement that ends attempts (it names its CTE "ended").
            lambda: waiting_on_lock(db, "skiplock-coordinator", "%ended AS (%"),
            10,
            message="the worker's report to reach the database",
        )
        coordinator.terminate()
        # Its loops stop (the wake-up listener hangs up) while the report is still in flight.
        wait_for(lambda: not listening_for_wakeups(), 10, message="the coordinator to stop")
        assert coordinator.is_running()
    assert coordinator.wait(20) == 0
    wait_status(db, task_id, "succeeded", timeout=5, cluster=cluster)
    audit(db, [task_id])
