"""Retries, timeouts, cancel and idempotent submission, end to end on one real cluster.

One cluster serves the whole module (each test looks only at its own tasks): a coordinator, the
scheduler and two workers with a 1 s kill grace. Every check reads the database or real pids.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools import databases
from devtools.cluster import Cluster
from devtools.invariants import audit
from devtools.tasks import (
    attempt_rows,
    submit,
    task_row,
    wait_attempt,
    wait_status,
)
from store import dispatch, tasks
from store.models import AttemptEnd, NewTask
from store.vocabulary import AttemptStatus, EndReason
from tests.support.attempts import end_attempt
from tests.support.pids import group_members, pid_alive, read_pids

KILL_GRACE = 1.0


@pytest.fixture(scope="module")
def cluster(
    pg_admin_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    with databases.throwaway_database(pg_admin_url, template=template_database) as url:
        cluster = Cluster(url, tmp_path_factory.mktemp("reliability"))
        try:
            cluster.start_coordinator()
            cluster.start_scheduler()
            for worker in ("worker-1", "worker-2"):
                cluster.start_worker(worker, slots=4, extra_args=[f"--kill-grace={KILL_GRACE}"])
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def db(cluster: Cluster) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        yield conn


def group_gone(pids: list[int]) -> bool:
    """Every listed process is gone, and so is every other member of the first one's group
    (the command's bash, leader of its own process group)."""
    return not any(pid_alive(p) for p in pids) and not group_members(pids[0])


def pid_recording(pid_file: Path, tail: str = "sleep 100") -> str:
    """bash that starts a background child, writes its own pid and the child's, then `tail`."""
    return f"sleep 100 & echo $$ $! > {pid_file}; {tail}"


# --- retries ------------------------------------------------------------------------------------


def test_non_zero_exit_is_retried_after_backoff_then_fails_with_the_last_reason(cluster, db):
    backoff = 0.3
    task_id = submit(cluster, "exit 3", max_retries=2, retry_backoff_seconds=backoff)
    wait_status(db, task_id, "failed", cluster=cluster)

    attempts = attempt_rows(db, task_id)
    assert [(a["attempt"], a["status"], a["reason"], a["exit_code"]) for a in attempts] == [
        (1, "failed", "exit_code", 3),
        (2, "failed", "exit_code", 3),
        (3, "failed", "exit_code", 3),
    ]
    # Attempt k+1 is never picked before attempt k ended plus backoff * 2^(k-1) (database clock).
    for k in (1, 2):
        gap = attempts[k]["picked_at"] - attempts[k - 1]["ended_at"]
        assert gap >= timedelta(seconds=backoff * 2 ** (k - 1)), (k, gap)
    task = task_row(db, task_id)
    assert (task["status"], task["last_reason"], task["exit_code"]) == ("failed", "exit_code", 3)
    detail = cluster.http.get(f"/tasks/{task_id}").json()
    assert detail["retries_left"] == 0 and len(detail["attempts"]) == 3
    audit(db, [task_id], retry_reasons={"exit_code"}, only_these=False)


def test_a_timed_out_attempt_is_retried(cluster, db, tmp_path):
    # A command that hangs on its first run and succeeds on the second.
    marker = tmp_path / "ran-once"
    command = f"if [ -e {marker} ]; then exit 0; fi; touch {marker}; sleep 100"
    task_id = submit(cluster, command, timeout_seconds=0.5, max_retries=1, retry_backoff_seconds=0)
    wait_status(db, task_id, "succeeded", cluster=cluster)
    attempts = attempt_rows(db, task_id)
    assert [(a["status"], a["reason"]) for a in attempts] == [
        ("failed", "timeout"),
        ("succeeded", None),
    ]
    audit(db, [task_id], retry_reasons={"timeout"}, only_these=False)


def test_retry_endpoint_requeues_only_failed_tasks(cluster, db, tmp_path):
    flag = tmp_path / "fixed"
    task_id = submit(cluster, f"test -e {flag} || exit 7")
    wait_status(db, task_id, "failed", cluster=cluster)
    assert task_row(db, task_id)["exit_code"] == 7

    flag.touch()
    response = cluster.http.post(f"/tasks/{task_id}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("queued", "dispatched", "running", "succeeded")
    wait_status(db, task_id, "succeeded", cluster=cluster)
    attempts = attempt_rows(db, task_id)
    assert [(a["status"], a["reason"]) for a in attempts] == [
        ("failed", "exit_code"),
        ("succeeded", None),
    ]

    # Succeeded, queued (not due for an hour) and unknown tasks cannot be retried.
    later = submit(cluster, "true", delay_seconds=3600)
    for tid, state in ((task_id, "succeeded"), (later, "queued")):
        response = cluster.http.post(f"/tasks/{tid}/retry")
        assert response.status_code == 409, response.text
        assert state in response.json()["detail"]
    assert cluster.http.post(f"/tasks/{uuid.uuid4()}/retry").status_code == 404
    assert cluster.http.post("/tasks/not-a-uuid/retry").status_code == 422
    assert cluster.http.post(f"/tasks/{later}/cancel").status_code == 200


# --- timeouts -----------------------------------------------------------------------------------


def test_timeout_kills_the_whole_process_group(cluster, db, tmp_path):
    pid_file = tmp_path / "pids"
    task_id = submit(cluster, pid_recording(pid_file), timeout_seconds=1)
    pids = read_pids(pid_file, 2)
    wait_status(db, task_id, "failed", cluster=cluster)
    [attempt] = attempt_rows(db, task_id)
    assert (attempt["status"], attempt["reason"]) == ("failed", "timeout")
    assert attempt["exit_code"] == 128 + 15  # bash died of the SIGTERM
    assert group_gone(pids), f"processes survived the timeout: {group_members(pids[0])}"


def test_timeout_kills_commands_that_ignore_sigterm_after_the_grace(cluster, db, tmp_path):
    pid_file = tmp_path / "pids"
    # SIG_IGN is inherited: bash and its background child both ignore SIGTERM.
    command = f"trap '' TERM; {pid_recording(pid_file)}"
    task_id = submit(cluster, command, timeout_seconds=0.5)
    pids = read_pids(pid_file, 2)
    wait_status(db, task_id, "failed", cluster=cluster)
    [attempt] = attempt_rows(db, task_id)
    assert (attempt["reason"], attempt["exit_code"]) == ("timeout", 128 + 9)
    assert attempt["ended_at"] - attempt["started_at"] >= timedelta(seconds=0.5 + KILL_GRACE)
    assert group_gone(pids), f"processes survived the timeout: {group_members(pids[0])}"


# --- cancel -------------------------------------------------------------------------------------


def test_cancelling_a_queued_task_is_immediate_and_idempotent(cluster, db):
    task_id = submit(cluster, "true", delay_seconds=3600)
    for _ in range(2):
        response = cluster.http.post(f"/tasks/{task_id}/cancel")
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["attempts"]) == ("cancelled", [])
    task = task_row(db, task_id)
    assert task["status"] == "cancelled" and task["cancelled_at"] is not None
    audit(db, [task_id], only_these=False)


def test_cancelling_a_running_task_kills_its_process_group(cluster, db, tmp_path):
    pid_file = tmp_path / "pids"
    task_id = submit(cluster, pid_recording(pid_file), max_retries=3)
    pids = read_pids(pid_file, 2)
    wait_attempt(db, task_id, 1)
    assert all(pid_alive(p) for p in pids)

    response = cluster.http.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    ended = wait_attempt(db, task_id, 1, "ended_at IS NOT NULL", timeout=KILL_GRACE + 10)
    assert (ended["status"], ended["reason"]) == ("cancelled", "cancelled")
    assert group_gone(pids), f"processes survived the cancel: {group_members(pids[0])}"
    # Cancelled for good: no retry although retries were left, and cancel stays idempotent.
    again = cluster.http.post(f"/tasks/{task_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert task_row(db, task_id)["attempt"] == 1
    audit(db, [task_id], only_these=False)


def test_cancel_kills_a_command_that_ignores_sigterm(cluster, db, tmp_path):
    pid_file = tmp_path / "pids"
    task_id = submit(cluster, f"trap '' TERM; {pid_recording(pid_file)}")
    pids = read_pids(pid_file, 2)
    wait_attempt(db, task_id, 1)
    assert cluster.http.post(f"/tasks/{task_id}/cancel").status_code == 200
    ended = wait_attempt(db, task_id, 1, "ended_at IS NOT NULL", timeout=KILL_GRACE + 10)
    assert (ended["reason"], ended["exit_code"]) == ("cancelled", 128 + 9)
    assert group_gone(pids)


def test_cancelling_a_finished_task_is_a_409_that_says_so(cluster, db):
    done = submit(cluster, "true")
    failed = submit(cluster, "exit 1")
    for task_id, status in ((done, "succeeded"), (failed, "failed")):
        wait_status(db, task_id, status, cluster=cluster)
        response = cluster.http.post(f"/tasks/{task_id}/cancel")
        assert response.status_code == 409, response.text
        assert f"already finished as {status}" in response.json()["detail"]
        assert task_row(db, task_id)["status"] == status
    assert cluster.http.post(f"/tasks/{uuid.uuid4()}/cancel").status_code == 404


# --- idempotent submission ----------------------------------------------------------------------


def test_idempotency_key_returns_the_original_task_and_rejects_another_body(cluster, db):
    body = {"command": "true", "delay_seconds": 3600, "max_retries": 2}
    headers = {"Idempotency-Key": "reliability-same-key"}
    first = cluster.http.post("/schedule", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = cluster.http.post("/schedule", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["task_id"] == first.json()["task_id"]
    other = cluster.http.post("/schedule", json={**body, "command": "false"}, headers=headers)
    assert other.status_code == 409 and "different request body" in other.json()["detail"]
    rows = db.execute(
        "SELECT count(*) FROM tasks WHERE idempotency_key = 'reliability-same-key'"
    ).fetchone()
    assert rows == (1,)
    assert (
        cluster.http.post("/schedule", json=body, headers={"Idempotency-Key": ""}).status_code
        == 422
    )


def test_concurrent_identical_requests_create_exactly_one_task(cluster, db):
    body = {"command": "true", "delay_seconds": 3600}
    headers = {"Idempotency-Key": "reliability-race"}

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=cluster.scheduler_url, timeout=15) as client:
            return await asyncio.gather(
                *(client.post("/schedule", json=body, headers=headers) for _ in range(16))
            )

    responses = asyncio.run(race())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 15 + [201], [r.text for r in responses]
    assert len({r.json()["task_id"] for r in responses}) == 1
    rows = db.execute("SELECT count(*) FROM tasks WHERE idempotency_key = 'reliability-race'")
    assert rows.fetchone() == (1,)


def test_retry_backoff_never_exceeds_the_cap_jitter_included(database_url):
    """Exponential backoff with jitter, capped: a retry is due between backoff and the cap."""
    backoff = 3500.0  # close under the cap, so jitter on top would cross it

    async def fail_once(conn: psycopg.AsyncConnection[Any]) -> float:
        await dispatch.upsert_worker(conn, "w", "127.0.0.1:9", 1, False)
        task = uuid.uuid4()
        new = NewTask("true", None, None, max_retries=5, retry_backoff_seconds=backoff)
        await tasks.insert_task(conn, task, new)
        [claimed] = (await dispatch.claim_for_free_slots(conn, 60.0, 0)).attempts
        end = AttemptEnd(
            task,
            claimed.attempt,
            AttemptStatus.FAILED,
            EndReason.EXIT_CODE,
            worker_id="w",
            exit_code=1,
        )
        assert await end_attempt(conn, end) == (True, "queued")
        cur = await conn.execute(
            "SELECT extract(epoch FROM run_at - now()) FROM tasks WHERE id = %s", (task,)
        )
        row = await cur.fetchone()
        assert row is not None
        return float(row[0])

    async def delays() -> list[float]:
        found = []
        for _ in range(10):
            async with await psycopg.AsyncConnection.connect(database_url) as conn:
                found.append(await fail_once(conn))  # rolled back: each starts afresh
        return found

    for delay in asyncio.run(delays()):
        assert backoff <= delay <= dispatch.RETRY_BACKOFF_CAP_SECONDS, delay
