"""GET /tasks/{id}/output on a real cluster: commands' output reaches PostgreSQL through the
coordinator and is read back over HTTP, whole or followed while the command runs, and stays
readable once the worker that ran it is gone."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from common.output import DEFAULT_OUTPUT_CAP_BYTES, omission_marker
from devtools.cluster import Cluster, wait_for
from devtools.tasks import submit, wait_status

Db = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def shared(module_cluster: Cluster) -> Cluster:
    return module_cluster


def output(cluster: Cluster, task_id: str, **params: Any) -> httpx.Response:
    return cluster.http.get(f"/tasks/{task_id}/output", params=params)


def finished(cluster: Cluster, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any]:
        body: dict[str, Any] = cluster.http.get(f"/tasks/{task_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else {}

    return wait_for(
        done, 60, interval=0.05, message=lambda: f"{task_id} to finish\n{cluster.logs()}"
    )


def test_a_finished_commands_output_is_served_with_its_headers(shared):
    task_id = submit(shared, "echo out; echo err >&2; exit 3")
    assert finished(shared, task_id)["status"] == "failed"
    response = output(shared, task_id)
    assert response.status_code == 200, response.text
    assert response.text == "out\nerr\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-skiplock-attempt"] == "1"
    assert response.headers["x-skiplock-output-bytes"] == "8"
    assert response.headers["x-skiplock-output-omitted"] == "0"
    assert response.headers["x-skiplock-attempt-ended"] == "true"


def test_each_attempt_keeps_its_own_output(shared):
    task_id = submit(shared, "echo attempt $RANDOM; exit 1", max_retries=1, retry_backoff_seconds=0)
    detail = finished(shared, task_id)
    assert [a["attempt"] for a in detail["attempts"]] == [1, 2]
    first, second = output(shared, task_id, attempt=1), output(shared, task_id, attempt=2)
    latest = output(shared, task_id)
    assert first.text.startswith("attempt ") and second.text.startswith("attempt ")
    assert latest.text == second.text and latest.headers["x-skiplock-attempt"] == "2"
    assert first.headers["x-skiplock-attempt"] == "1"


def test_a_running_commands_output_is_followed_to_its_end(shared, tmp_path):
    """The command waits for a file the test creates only once it has read the first line
    from the stream: bytes arrive while the command runs, and the stream ends with it."""
    gate = tmp_path / "gate"
    task_id = submit(shared, f"echo first; until [ -e {gate} ]; do sleep 0.05; done; echo second")
    wait_for(lambda: shared.http.get(f"/tasks/{task_id}").json()["attempt"] == 1, 30)
    received = b""
    with shared.http.stream(
        "GET", f"/tasks/{task_id}/output", params={"follow": "true"}, timeout=60
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += chunk
            if received == b"first\n":
                assert not gate.exists()
                gate.touch()
    assert received == b"first\nsecond\n"
    assert finished(shared, task_id)["status"] == "succeeded"


def test_follow_of_an_ended_attempt_sends_everything_and_ends(shared):
    task_id = submit(shared, "printf 'a%.0s' $(seq 1 1000)")
    finished(shared, task_id)
    with shared.http.stream(
        "GET", f"/tasks/{task_id}/output", params={"follow": "true"}, timeout=30
    ) as response:
        body = response.read()
    assert body == b"a" * 1000


def test_several_mib_keep_the_first_and_last_64_kib_with_a_marker_between(shared, tmp_path):
    command = "seq 1 600000"  # about 4.3 MB
    expected = subprocess.run(["bash", "-c", command], capture_output=True, check=True).stdout
    task_id = submit(shared, command)
    assert finished(shared, task_id)["status"] == "succeeded"
    response = output(shared, task_id, encoding="raw")
    cap = DEFAULT_OUTPUT_CAP_BYTES
    omitted = len(expected) - 2 * cap
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["x-skiplock-output-bytes"] == str(len(expected))
    assert response.headers["x-skiplock-output-omitted"] == str(omitted)
    assert response.content == expected[:cap] + omission_marker(omitted) + expected[-cap:]
    # The file on the worker is untouched.
    path = Path(finished(shared, task_id)["output_path"])
    assert path.read_bytes() == expected


def test_bytes_that_are_not_utf8_are_replaced_in_text_and_kept_in_raw(shared):
    task_id = submit(shared, r"printf 'caf\xc3\xa9 \xff\xfe\x00 end'")
    finished(shared, task_id)
    raw = output(shared, task_id, encoding="raw")
    assert raw.content == b"caf\xc3\xa9 \xff\xfe\x00 end"
    text = output(shared, task_id, encoding="text")
    assert text.content.decode("utf-8") == "café \ufffd\ufffd\x00 end"


def test_what_has_no_output_says_why_with_a_404(shared):
    task_id = submit(shared, "true")
    finished(shared, task_id)
    assert output(shared, task_id).content == b""
    missing = output(shared, task_id, attempt=2)
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"task {task_id} has no attempt 2 (its latest is 1)"}
    later = submit(shared, "true", delay_seconds=3600)
    never = output(shared, later)
    assert never.status_code == 404 and "not been dispatched" in never.json()["detail"]
    unknown = output(shared, "00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404
    assert output(shared, "nope").status_code == 422
    assert output(shared, task_id, encoding="latin1").status_code == 422
    assert output(shared, task_id, attempt=0).status_code == 422


def test_a_finished_attempts_output_is_served_after_its_worker_was_killed(cluster_factory, db):
    cluster = cluster_factory(workers=1)
    task_id = submit(cluster, "echo kept in the database; head -c 200000 /dev/zero | tr '\\0' x")
    wait_status(db, task_id, "succeeded", cluster=cluster)
    cluster.workers["worker-1"].send_signal(signal.SIGKILL)
    cluster.workers["worker-1"].wait(10)
    response = output(cluster, task_id)
    assert response.status_code == 200
    cap = DEFAULT_OUTPUT_CAP_BYTES
    written = b"kept in the database\n" + b"x" * 200_000
    omitted = len(written) - 2 * cap
    assert response.content == written[:cap] + omission_marker(omitted) + written[-cap:]
