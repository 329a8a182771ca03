"""Fault injection with real processes: kill -9, SIGSTOP/SIGCONT and a Postgres that is stopped or
killed under load. After each fault the database must show every accepted task in exactly one
terminal state, and a task run twice only where an attempt ended with a recorded reason.

Commands append a token to a log each time they really run (devtools.tasks), so how often a
task ran is counted on the side, not taken from the database under test. Commands that must hang
on one worker and finish on another look at $SKIPLOCK_WORKER_ID, which every worker gives its
commands.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools.cluster import Cluster, wait_for
from devtools.invariants import SlotWatch, audit
from devtools.tasks import (
    attempt_rows,
    executions,
    new_token,
    recording_command,
    submit,
    submit_many,
    wait_all_terminal,
    wait_attempt,
    wait_status,
)
from tests.support.pids import pid_alive, read_pids

# Coordinators declare a worker lost after this much silence (coordinator_svc/config.py).
LOST_AFTER = 3.0


def hang_on(worker_id: str, pid_file: Path, until: Path | None = None) -> str:
    """Shell that records its pid and hangs (until `until` exists) on `worker_id` only."""
    wait = f"until [ -e {until} ]; do sleep 0.05; done" if until else "exec sleep 100"
    return f'if [ "$SKIPLOCK_WORKER_ID" = {worker_id} ]; then echo $$ >> {pid_file}; {wait}; fi'


@contextlib.contextmanager
def orphans_reaped(pid_file: Path) -> Iterator[None]:
    """A worker killed with SIGKILL leaves its commands running (each leads its own process
    group); kill those groups when the test ends."""
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            for pid in pid_file.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def frozen(process: Any) -> Iterator[None]:
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def db_now(db: psycopg.Connection[Any]) -> Any:
    row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def silent_for(db: psycopg.Connection[Any], worker_id: str, seconds: float) -> bool:
    row = db.execute(
        "SELECT clock_timestamp() - last_heartbeat_at > make_interval(secs => %s)"
        " FROM workers WHERE id = %s",
        (seconds, worker_id),
    ).fetchone()
    return bool(row and row[0])


def ran_by_task(log: Path, tokens: dict[str, str]) -> dict[str, int]:
    """How often each task's command ran, from the execution log; tokens maps token -> task."""
    counts = executions(log)
    return {task_id: counts[token] for token, task_id in tokens.items()}


def submit_recorded(cluster: Cluster, log: Path, tail: str = "", **fields: Any) -> tuple[str, str]:
    """Submit a command that records its executions; returns (task id, token)."""
    token = new_token()
    return submit(cluster, recording_command(log, token, tail), **fields), token


# --- workers that die -------------------------------------------------------------------------


def test_worker_killed_mid_command_loses_its_attempts_and_they_are_retried_elsewhere(
    cluster_factory, db, tmp_path
):
    cluster = cluster_factory(workers=0)
    victim = cluster.start_worker("worker-1", slots=2)
    log, pids = tmp_path / "ran", tmp_path / "pids"
    with orphans_reaped(pids):
        tail = hang_on("worker-1", pids)
        retried, t1 = submit_recorded(cluster, log, tail, max_retries=1, retry_backoff_seconds=0)
        failed, t2 = submit_recorded(cluster, log, tail)
        for task_id in (retried, failed):
            wait_attempt(db, task_id, 1)
        read_pids(pids, 2)
        cluster.start_worker("worker-2", slots=2)

        victim.kill()
        killed_at = db_now(db)
        wait_status(db, failed, "failed", cluster=cluster)
        wait_status(db, retried, "succeeded", cluster=cluster)

    for task_id in (retried, failed):
        first = attempt_rows(db, task_id)[0]
        assert (first["worker_id"], first["reason"]) == ("worker-1", "worker_lost")
        # Heartbeat every 1 s, lost after 3 s of silence, reaper every 0.25 s: within 5 s.
        assert first["ended_at"] - killed_at < timedelta(seconds=5), first["ended_at"] - killed_at
    assert [a["worker_id"] for a in attempt_rows(db, retried)] == ["worker-1", "worker-2"]
    assert db.execute("SELECT last_reason FROM tasks WHERE id = %s", (failed,)).fetchone() == (
        "worker_lost",
    )
    found = audit(
        db,
        [retried, failed],
        retry_reasons={"worker_lost"},
        ran=ran_by_task(log, {t1: retried, t2: failed}),
    )
    assert found.duplicates == [retried]  # ran on worker-1 (killed) and again on worker-2


def test_worker_killed_while_its_report_is_undeliverable(cluster_factory, db, tmp_path):
    """The command finishes while no coordinator can take its report; then the worker dies.
    Its attempt is lost with it and the task runs again; the other worker, alive all along,
    keeps its attempt although it could not heartbeat either."""
    cluster = cluster_factory(workers=0)
    victim = cluster.start_worker("worker-1", slots=1)
    log, pids = tmp_path / "ran", tmp_path / "pids"
    go_1, go_2 = tmp_path / "go-1", tmp_path / "go-2"
    with orphans_reaped(pids):
        lost, t1 = submit_recorded(
            cluster, log, hang_on("worker-1", pids, go_1), max_retries=1, retry_backoff_seconds=0
        )
        wait_attempt(db, lost, 1)
        cluster.start_worker("worker-2", slots=1)
        kept, t2 = submit_recorded(cluster, log, hang_on("worker-2", pids, go_2))
        wait_attempt(db, kept, 1)
        [pid_1, pid_2] = read_pids(pids, 2)

        coordinator = cluster.coordinators[0]
        coordinator.kill()
        go_1.touch()  # the command ends; its report cannot be delivered
        wait_for(lambda: not pid_alive(pid_1), 10, message="the command on worker-1 to end")
        victim.kill()
        cluster.start_coordinator(port=cluster.coordinator_ports[0])

        wait_attempt(db, lost, 1, "ended_at IS NOT NULL", timeout=30)
        assert pid_alive(pid_2)
        go_2.touch()
        wait_status(db, kept, "succeeded", cluster=cluster)
        wait_status(db, lost, "succeeded", cluster=cluster)

    assert [(a["worker_id"], a["reason"]) for a in attempt_rows(db, lost)] == [
        ("worker-1", "worker_lost"),
        ("worker-2", None),
    ]
    assert [(a["worker_id"], a["status"]) for a in attempt_rows(db, kept)] == [
        ("worker-2", "succeeded")
    ]
    ran = ran_by_task(log, {t1: lost, t2: kept})
    assert audit(db, [lost, kept], retry_reasons={"worker_lost"}, ran=ran).duplicates == [lost]


@pytest.mark.parametrize("coordinators", [1, 2])
def test_a_coordinator_frozen_past_the_lost_bound_declares_nobody_lost(
    cluster_factory, db, tmp_path, coordinators
):
    """SIGSTOP the coordinator the workers talk to. Alone, it hears no heartbeat while frozen
    and must not take that silence for lost workers when it wakes up; with a second one
    running, the workers fail over to it before the lost bound."""
    cluster = cluster_factory(workers=2, coordinators=coordinators, slots=1)
    log, go = tmp_path / "ran", tmp_path / "go"
    tasks = {}
    for _ in range(2):
        task_id, token = submit_recorded(cluster, log, f"until [ -e {go} ]; do sleep 0.05; done")
        tasks[token] = task_id
    for task_id in tasks.values():
        wait_attempt(db, task_id, 1)

    with frozen(cluster.coordinators[0]):
        since = time.monotonic()
        wait_for(
            lambda: (
                time.monotonic() - since > LOST_AFTER + 1.5
                and (coordinators > 1 or silent_for(db, "worker-1", LOST_AFTER + 1))
            ),
            20,
            message="the coordinator to stay frozen past the lost bound",
        )
    go.touch()
    for task_id in tasks.values():
        wait_status(db, task_id, "succeeded", cluster=cluster)
    found = audit(db, list(tasks.values()), ran=ran_by_task(log, tasks))
    assert not found.retried and not found.duplicates
    lost = db.execute("SELECT count(*) FROM workers WHERE lost_at IS NOT NULL").fetchone()
    assert lost == (0,)
    assert "declared lost" not in "".join(c.log_text() for c in cluster.coordinators)


def test_worker_back_after_being_declared_lost_kills_its_revoked_attempts(
    cluster_factory, db, tmp_path
):
    """SIGSTOP a worker past the lost bound: its attempts are retried elsewhere. On SIGCONT it
    learns they are no longer its own and kills them; its late reports (a success among them)
    change nothing."""
    cluster = cluster_factory(workers=0)
    returning = cluster.start_worker("worker-1", slots=2, extra_args=["--kill-grace=1"])
    log, pids, finish = tmp_path / "ran", tmp_path / "pids", tmp_path / "finish"
    with orphans_reaped(pids):
        hung, t1 = submit_recorded(
            cluster, log, hang_on("worker-1", pids), max_retries=1, retry_backoff_seconds=0
        )
        finishing, t2 = submit_recorded(
            cluster, log, hang_on("worker-1", pids, finish), max_retries=1, retry_backoff_seconds=0
        )
        for task_id in (hung, finishing):
            wait_attempt(db, task_id, 1)
        pid_by_task = dict(zip((hung, finishing), read_pids(pids, 2), strict=False))
        cluster.start_worker("worker-2", slots=2)

        with frozen(returning):
            finish.touch()  # this command now ends, but worker-1 cannot report it
            for task_id in (hung, finishing):
                wait_status(db, task_id, "succeeded", timeout=30, cluster=cluster)
            before = {t: attempt_rows(db, t) for t in (hung, finishing)}

        # Back: its next heartbeat revokes both attempts; the hung command is killed.
        wait_for(
            lambda: not any(pid_alive(p) for p in pid_by_task.values()),
            15,
            message=lambda: f"worker-1 to kill its revoked attempts\n{cluster.logs()}",
        )
        wait_for(
            lambda: (
                db.execute("SELECT lost_at IS NULL FROM workers WHERE id = 'worker-1'").fetchone()
                == (True,)
            ),
            10,
            message="worker-1 to heartbeat again",
        )
        # A graceful stop delivers every report it still holds before it exits.
        returning.terminate()
        assert returning.wait(30) == 0
        assert "undelivered reports" not in returning.log_text()

    after = {t: attempt_rows(db, t) for t in (hung, finishing)}
    assert after == before, "late reports of a lost worker changed the database"
    for task_id in (hung, finishing):
        assert [(a["worker_id"], a["reason"]) for a in after[task_id]] == [
            ("worker-1", "worker_lost"),
            ("worker-2", None),
        ]
    ran = ran_by_task(log, {t1: hung, t2: finishing})
    assert sorted(
        audit(db, [hung, finishing], retry_reasons={"worker_lost"}, ran=ran).duplicates
    ) == sorted([hung, finishing])


def test_worker_restarted_under_the_same_id_gives_up_what_it_no_longer_holds(
    cluster_factory, db, tmp_path
):
    """kill -9 and an immediate restart: the worker is never silent long enough to be declared
    lost, but its heartbeats no longer list the attempt, so reconciliation ends it."""
    cluster = cluster_factory(workers=0)
    victim = cluster.start_worker("worker-1", slots=1)
    log, pids = tmp_path / "ran", tmp_path / "pids"
    with orphans_reaped(pids):
        # Hangs on its first run only, wherever that is.
        tail = f"if [ ! -e {pids} ]; then echo $$ >> {pids}; exec sleep 100; fi"
        task_id, token = submit_recorded(cluster, log, tail, max_retries=1, retry_backoff_seconds=0)
        wait_attempt(db, task_id, 1)
        read_pids(pids, 1)
        victim.kill()
        victim.wait(10)
        cluster.start_worker("worker-1", slots=1)
        wait_status(db, task_id, "succeeded", timeout=30, cluster=cluster)

    assert [(a["worker_id"], a["reason"]) for a in attempt_rows(db, task_id)] == [
        ("worker-1", "worker_lost"),
        ("worker-1", None),
    ]
    assert db.execute("SELECT count(*) FROM workers WHERE lost_at IS NOT NULL").fetchone() == (0,)
    ran = ran_by_task(log, {token: task_id})
    assert audit(db, [task_id], retry_reasons={"worker_lost"}, ran=ran).duplicates == [task_id]


def test_cancel_while_the_hand_over_is_in_flight(cluster_factory, db, tmp_path):
    """The worker is frozen while the task is handed to it, and the task is cancelled then: it
    is cancelled at once, and once the worker thaws the attempt is stopped there."""
    cluster = cluster_factory(workers=1, slots=1)
    worker = cluster.workers["worker-1"]
    pids = tmp_path / "pids"
    with orphans_reaped(pids):
        with frozen(worker):
            task_id = submit(cluster, f"sleep 100 & echo $$ $! >> {pids}; sleep 100")
            wait_attempt(db, task_id, 1, "status = 'dispatched'")
            response = cluster.http.post(f"/tasks/{task_id}/cancel")
            assert response.status_code == 200 and response.json()["status"] == "cancelled"
        ended = wait_attempt(db, task_id, 1, "ended_at IS NOT NULL", timeout=20)
        assert (ended["status"], ended["reason"]) == ("cancelled", "cancelled")
        # It may have started before the stop reached it, even be stopped before it wrote its
        # pids (the file is then empty): whatever it wrote is gone once its attempt has ended.
        started = [int(p) for p in pids.read_text().split()] if pids.exists() else []
        wait_for(lambda: not any(pid_alive(p) for p in started), 10, message="the kill")
    audit(db, [task_id])


# --- coordinators -------------------------------------------------------------------------------


def test_coordinator_killed_mid_dispatch_with_a_second_one_running(cluster_factory, db, tmp_path):
    """Kill a coordinator while its hand-overs to a worker are in flight: the second
    coordinator finishes everything; attempts the worker never got are given up after the
    hand-over grace (dispatch_lost) and run once elsewhere."""
    cluster = cluster_factory(workers=2, coordinators=2, slots=4)
    victim, survivor = cluster.coordinators
    log = tmp_path / "ran"
    tokens = [new_token() for _ in range(150)]
    commands = [recording_command(log, t, "sleep 0.02") for t in tokens]
    ids = submit_many(cluster.scheduler_url, commands[:50])
    wait_all_terminal(db, ids, cluster=cluster)  # both coordinators at work, worker-1 idle

    # Only the victim may claim now, and its hand-overs to worker-1 hang until it dies.
    with frozen(survivor), frozen(cluster.workers["worker-1"]):
        frozen_at = db_now(db)
        ids += submit_many(cluster.scheduler_url, commands[50:])
        in_flight = wait_for(
            lambda: db.execute(
                "SELECT task_id FROM attempts WHERE worker_id = 'worker-1'"
                " AND status = 'dispatched' AND picked_at > %s",
                (frozen_at,),
            ).fetchall(),
            15,
            message="hand-overs to the frozen worker",
        )
        victim.kill()
    wait_all_terminal(db, ids, timeout=60, cluster=cluster)
    found = audit(
        db,
        ids,
        retry_reasons={"dispatch_lost", "worker_unreachable", "worker_refused"},
        ran=ran_by_task(log, dict(zip(tokens, ids, strict=True))),
    )
    assert found.statuses == {"succeeded": len(ids)}
    assert not found.duplicates
    # Each interrupted hand-over either reached worker-1 after all or was given up and retried.
    for (task_id,) in in_flight:
        rows = found.attempts[str(task_id)]
        assert rows[0]["status"] == "succeeded" or rows[0]["reason"] == "dispatch_lost", rows


def test_two_coordinators_share_2000_tasks(cluster_factory, db, database_url, tmp_path):
    cluster = cluster_factory(workers=2, coordinators=2, slots=4)
    log = tmp_path / "ran"
    tokens = [new_token() for _ in range(2000)]
    with SlotWatch(database_url) as slots:
        ids = submit_many(cluster.scheduler_url, [recording_command(log, t) for t in tokens])
        wait_all_terminal(db, ids, timeout=180, cluster=cluster)
    assert slots.samples > 0 and not slots.over, slots.over[:5]
    found = audit(db, ids, ran=ran_by_task(log, dict(zip(tokens, ids, strict=True))))
    assert found.statuses == {"succeeded": 2000}
    assert not found.retried and not found.duplicates
    per_worker = db.execute("SELECT worker_id, count(*) FROM attempts GROUP BY 1").fetchall()
    assert len(per_worker) == 2, per_worker


# --- the database -------------------------------------------------------------------------------


class Submitter(threading.Thread):
    """Submits recording commands until stopped, each under an Idempotency-Key so that a
    request that failed in the outage is safely sent again; keeps every accepted task."""

    def __init__(self, url: str, log: Path, tail: str) -> None:
        super().__init__(name="submitter", daemon=True)
        self.url, self.log, self.tail = url, log, tail
        self.accepted: dict[str, str] = {}  # token -> task id
        self.rejected = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as client:
            while not self.stop.is_set():
                token = new_token()
                # Recorded when the command ends: an outage can then be seen to hold reports.
                body = {"command": recording_command(self.log, token, self.tail, at_end=True)}
                while token not in self.accepted:
                    try:
                        response = client.post(
                            "/schedule", json=body, headers={"Idempotency-Key": token}
                        )
                    except httpx.TransportError:
                        response = None
                    if response is not None and response.status_code in (200, 201):
                        self.accepted[token] = response.json()["task_id"]
                    else:
                        assert response is None or response.status_code == 503, response.text
                        self.rejected += 1
                        time.sleep(0.1)
                self.stop.wait(0.03)


def readyz(cluster: Cluster) -> int:
    try:
        return cluster.http.get("/readyz").status_code
    except httpx.TransportError:
        return 0


@pytest.mark.parametrize("outage", ["restart", "kill"])
def test_postgres_outage_under_load_loses_nothing(cluster_factory, embedded_pg, tmp_path, outage):
    url = embedded_pg.url("skiplock")
    cluster = cluster_factory(workers=2, slots=2, database_url=url)
    log = tmp_path / "ran"
    submitter = Submitter(cluster.scheduler_url, log, "sleep 0.3")
    submitter.start()
    with psycopg.connect(url, autocommit=True) as db:
        wait_for(lambda: len(submitter.accepted) >= 20, 30, message="tasks to be accepted")
        wait_for(lambda: sum(executions(log).values()) >= 5, 30, message="tasks to run")

    ran_before_outage = set(executions(log))
    if outage == "restart":
        embedded_pg.stop("fast")
    else:
        embedded_pg.kill()
    down_at = time.monotonic()
    wait_for(lambda: readyz(cluster) == 503, 15, message="/readyz to say 503")
    # Down past the lost-worker bound, with commands finishing whose reports must wait.
    wait_for(
        lambda: (
            time.monotonic() - down_at > LOST_AFTER + 1
            and len(executions(log)) > len(ran_before_outage)
        ),
        30,
        message="commands to finish while the database is down",
    )
    ran_before_recovery = set(executions(log))
    embedded_pg.start()
    wait_for(lambda: readyz(cluster) == 200, 30, message=lambda: f"/readyz 200\n{cluster.logs()}")
    accepted_before = len(submitter.accepted)
    wait_for(lambda: len(submitter.accepted) > accepted_before + 10, 30, message="more tasks")
    submitter.stop.set()
    submitter.join(30)

    with psycopg.connect(url, autocommit=True) as db:
        ids = list(submitter.accepted.values())
        wait_all_terminal(db, ids, timeout=60, cluster=cluster)
        assert all(p.is_running() for p in cluster.processes()), cluster.logs()
        found = audit(db, ids, ran=ran_by_task(log, submitter.accepted))
        assert found.statuses == {"succeeded": len(ids)}
        assert not found.retried and not found.duplicates
        # Commands that finished in the outage were reported afterwards, not run again.
        held = ran_before_recovery - ran_before_outage
        assert held
        for token in held & set(submitter.accepted):
            assert len(found.attempts[submitter.accepted[token]]) == 1
