"""The `skiplock` CLI run as a subprocess against a real cluster: exit codes, the API's JSON
with --json, tables for people, and one-line errors."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster import LOOPBACK, Cluster, wait_for
from devtools.tasks import submit
from tests.support.cli import cli_json, describe, run_cli
from tests.support.inprocess import refusing_address

STATUS_VIEW = {
    "task_id", "command", "status", "scheduled_at", "picked_at", "started_at", "completed_at",
    "failed_at", "cancelled_at", "exit_code", "worker_id", "output_path", "attempt", "last_reason",
}  # fmt: skip


@pytest.fixture
def url(module_cluster: Cluster) -> str:
    return module_cluster.scheduler_url


def task(cluster: Cluster, task_id: str) -> dict[str, Any]:
    response = cluster.http.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(cluster: Cluster, task_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        current = task(cluster, task_id)
        return current if current["status"] in ("succeeded", "failed") else None

    found = wait_for(done, timeout=60, message=f"task {task_id} to finish")
    assert found is not None
    return found


# -- tasks ----------------------------------------------------------------------------------


def test_submit_wait_exits_with_the_commands_status(url: str) -> None:
    ok = run_cli("submit", "--wait", "echo fine", url=url)
    assert ok.returncode == 0, describe(ok)
    assert "succeeded" in ok.stdout and "exit 0" in ok.stdout, describe(ok)

    failed = run_cli("submit", "--wait", "echo trying; exit 4", url=url)
    assert failed.returncode == 4, describe(failed)
    assert "failed" in failed.stdout and "exit 4" in failed.stdout, describe(failed)


def test_submit_prints_the_apis_status_view_as_json(module_cluster: Cluster, url: str) -> None:
    created = cli_json("submit", "echo hello", url=url)
    assert set(created) == STATUS_VIEW
    assert created["command"] == "echo hello"
    finished(module_cluster, created["task_id"])

    # --json after the command works as well as before it.
    result = run_cli("status", created["task_id"], "--json", url=url)
    assert result.returncode == 0, describe(result)
    detail = json.loads(result.stdout)
    assert detail == task(module_cluster, created["task_id"])
    assert detail["status"] == "succeeded" and len(detail["attempts"]) == 1


def test_submit_after_waits_for_the_tasks_named(module_cluster: Cluster, url: str) -> None:
    first = cli_json("submit", "--in", "1h", "true", url=url)
    second = cli_json("submit", "--in", "1h", "true", url=url)
    result = run_cli(
        "submit", "--after", first["task_id"], "--after", second["task_id"], "true", url=url
    )
    assert result.returncode == 0, describe(result)
    assert "waiting" in result.stdout, describe(result)
    waiting = cli_json("submit", "--after", first["task_id"], "true", url=url)
    assert task(module_cluster, waiting["task_id"])["after"] == [first["task_id"]]
    run_cli("cancel", first["task_id"], url=url)
    assert task(module_cluster, waiting["task_id"])["last_reason"] == "dependency_failed"
    run_cli("cancel", second["task_id"], url=url)
    unknown = run_cli("submit", "--after", str(uuid.uuid4()), "true", url=url)
    assert unknown.returncode != 0 and "no task with id" in unknown.stderr, describe(unknown)


def test_submit_batch_sends_a_json_lines_file(
    module_cluster: Cluster, url: str, tmp_path: Path
) -> None:
    lines = [
        json.dumps({"command": "echo one", "delay_seconds": 600}),
        "",
        json.dumps({"command": "echo two", "priority": 5, "delay_seconds": 600}),
    ]
    batch = tmp_path / "tasks.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    answer = cli_json("submit", "--batch", str(batch), url=url)
    assert answer["created"] == 2 and len(answer["task_ids"]) == 2
    first, second = (task(module_cluster, i) for i in answer["task_ids"])
    assert first["command"] == "echo one" and second["priority"] == 5
    batch.write_text(lines[0] + "\nnot json\n")
    refused = run_cli("submit", "--batch", str(batch), url=url)
    assert refused.returncode != 0 and "line 2" in refused.stderr, describe(refused)
    both = run_cli("submit", "--batch", str(batch), "echo x", url=url)
    assert both.returncode != 0 and "not both" in both.stderr, describe(both)


def test_submit_in_a_duration_or_at_a_time(module_cluster: Cluster, url: str) -> None:
    before = datetime.now(UTC)
    later = cli_json("submit", "--in", "1h30m", "echo later", url=url)
    scheduled = datetime.fromisoformat(later["scheduled_at"])
    assert later["status"] == "queued"
    # Margins for a slow machine and clock reads on two sides; the point is 1h30m, not 1h30s.
    assert timedelta(minutes=89) < scheduled - before < timedelta(minutes=91)

    at = cli_json("submit", "--at", "2030-01-02T10:00:00+01:00", "echo then", url=url)
    assert at["scheduled_at"] == "2030-01-02T09:00:00Z"
    for created in (later, at):
        assert cli_json("cancel", created["task_id"], url=url)["status"] == "cancelled"


def test_submit_passes_timeout_retries_and_backoff(url: str) -> None:
    args = ["submit", "--wait", "--timeout", "1s", "--retries", "1", "--backoff", "0.2"]
    result = run_cli("--json", *args, "sleep 30", url=url)
    detail = json.loads(result.stdout)
    # The command's own status: bash's 128 + SIGTERM for a command stopped on its timeout.
    assert detail["exit_code"] == 143 and result.returncode == 143, describe(result)
    assert detail["timeout_seconds"] == 1 and detail["max_retries"] == 1
    assert detail["retry_backoff_seconds"] == 0.2
    assert [a["reason"] for a in detail["attempts"]] == ["timeout", "timeout"]


def test_human_output_is_a_summary_and_a_table_of_attempts(
    module_cluster: Cluster, url: str
) -> None:
    task_id = submit(module_cluster, "echo visible; exit 2")
    finished(module_cluster, task_id)
    result = run_cli("status", task_id, url=url)
    assert result.returncode == 0, describe(result)
    for text in (task_id, "echo visible; exit 2", "failed", "ATTEMPT", "exit_code", "worker-"):
        assert text in result.stdout, describe(result)


def test_status_watch_prints_each_change_until_the_end(module_cluster: Cluster, url: str) -> None:
    task_id = submit(module_cluster, "sleep 1")
    result = run_cli("--json", "status", "--watch", task_id, url=url)
    assert result.returncode == 0, describe(result)
    states = [json.loads(line) for line in result.stdout.splitlines()]
    assert states[-1]["status"] == "succeeded"
    assert all(state["task_id"] == task_id for state in states)
    assert len({(s["status"], s["attempt"]) for s in states}) == len(states)


def test_cancel_a_running_task_and_not_a_finished_one(module_cluster: Cluster, url: str) -> None:
    task_id = submit(module_cluster, "sleep 600")
    wait_for(
        lambda: task(module_cluster, task_id)["status"] == "running", timeout=30, message="running"
    )
    result = run_cli("cancel", task_id, url=url)
    assert result.returncode == 0, describe(result)
    assert "cancelled" in result.stdout, describe(result)

    done = submit(module_cluster, "true")
    finished(module_cluster, done)
    again = run_cli("cancel", done, url=url)
    assert again.returncode == 1, describe(again)
    assert again.stderr.strip() == f"skiplock: 409: task {done} already finished as succeeded"


def test_retry_a_failed_task_and_wait_for_it(module_cluster: Cluster, url: str) -> None:
    task_id = submit(module_cluster, "exit 5")
    finished(module_cluster, task_id)
    result = run_cli("retry", "--wait", task_id, url=url)
    assert result.returncode == 5, describe(result)
    assert task(module_cluster, task_id)["attempt"] == 2

    succeeded = submit(module_cluster, "true")
    finished(module_cluster, succeeded)
    refused = run_cli("retry", succeeded, url=url)
    assert refused.returncode == 1, describe(refused)
    assert "409: only failed tasks can be retried; task is succeeded" in refused.stderr


def test_tasks_ls_filters_by_status(module_cluster: Cluster, url: str) -> None:
    failed = submit(module_cluster, "exit 9")
    finished(module_cluster, failed)
    page = cli_json("tasks", "ls", "--status", "failed", "--limit", "500", url=url)
    assert page["tasks"] and {t["status"] for t in page["tasks"]} == {"failed"}
    assert failed in {t["task_id"] for t in page["tasks"]}

    table = run_cli("tasks", "ls", "--status", "failed", url=url)
    assert table.returncode == 0, describe(table)
    assert "STATUS" in table.stdout and failed in table.stdout, describe(table)


# -- errors and configuration ---------------------------------------------------------------


def test_an_unknown_task_prints_the_apis_detail(url: str) -> None:
    missing = str(uuid.UUID(int=0))
    result = run_cli("status", missing, url=url)
    assert result.returncode == 1, describe(result)
    assert result.stderr == f"skiplock: 404: no task with id {missing}\n"
    assert result.stdout == ""

    garbled = run_cli("cancel", "nope", url=url)
    assert garbled.returncode == 1, describe(garbled)
    assert garbled.stderr == "skiplock: 422: task_id 'nope' is not a UUID\n"


def test_validation_errors_name_the_field(url: str) -> None:
    result = run_cli("schedules", "add", "broken", "not a cron", "true", url=url)
    assert result.returncode == 1, describe(result)
    assert result.stderr.startswith("skiplock: 422: cron: "), describe(result)
    assert len(result.stderr.splitlines()) == 1


def test_an_unreachable_scheduler_says_where_and_how_to_start_one() -> None:
    with refusing_address() as address:
        url = f"http://{address}"
        result = run_cli("status", str(uuid.uuid4()), url=url)
    assert result.returncode == 1, describe(result)
    assert url in result.stderr and "make run" in result.stderr, describe(result)
    assert len(result.stderr.splitlines()) == 1, describe(result)


def test_the_url_comes_from_the_environment_unless_given(module_cluster: Cluster, url: str) -> None:
    task_id = submit(module_cluster, "true")
    from_env = run_cli("--json", "status", task_id, env={"SKIPLOCK_URL": url})
    assert from_env.returncode == 0, describe(from_env)
    with refusing_address() as address:
        elsewhere = f"http://{address}"
        overridden = run_cli("status", task_id, url=elsewhere, env={"SKIPLOCK_URL": url})
    assert overridden.returncode == 1 and elsewhere in overridden.stderr, describe(overridden)


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "--in", "5x", "true"],
        ["submit", "--in", "5s", "--at", "2030-01-01T00:00:00Z", "true"],
        ["submit", "--at", "2030-01-01T10:00:00", "true"],
        ["--url", "ftp://example.invalid", "status", "x"],
        ["schedules", "add", "n", "* * * * *", "true", "--overlap", "sometimes"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    # Checked before any request: nothing listens at the default URL in the suite.
    result = run_cli(*args)
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr


# -- schedules ------------------------------------------------------------------------------


def test_a_schedule_from_add_to_rm(module_cluster: Cluster, url: str) -> None:
    name = f"every-second-{uuid.uuid4().hex[:8]}"
    created = cli_json(
        "schedules", "add", name, "* * * * * *", "echo tick", "--tz", "Europe/London", url=url
    )
    sid = created["id"]
    assert created["timezone"] == "Europe/London" and created["overlap"] == "skip"

    assert cli_json("schedules", "show", name, url=url)["id"] == sid  # by name
    assert cli_json("schedules", "show", sid, url=url)["name"] == name  # by id
    listed = cli_json("schedules", "ls", "--prefix", name, url=url)
    assert [s["id"] for s in listed["schedules"]] == [sid]
    preview = cli_json("schedules", "preview", name, "-n", "3", url=url)
    assert len(preview["fire_times"]) == 3 and preview["timezone"] == "Europe/London"
    unsaved = cli_json(
        "schedules", "preview", "--cron", "0 9 * * MON", "--tz", "Asia/Tokyo", url=url
    )
    assert len(unsaved["fire_times"]) == 10
    assert all(f["local"][11:16] == "09:00" for f in unsaved["fire_times"])
    both = run_cli("schedules", "preview", name, "--cron", "@daily", url=url)
    assert both.returncode != 0 and "not both" in both.stderr, describe(both)

    def a_started_tick() -> bool:
        ticks = module_cluster.http.get(f"/schedules/{sid}/ticks").json()["ticks"]
        return any(t["outcome"] == "started" for t in ticks)

    wait_for(a_started_tick, timeout=30, interval=0.2, message="a started tick")
    ticks = cli_json("schedules", "ticks", name, url=url)["ticks"]
    assert any(t["outcome"] == "started" for t in ticks)

    assert cli_json("schedules", "pause", name, url=url)["paused"] is True
    paused = cli_json("schedules", "ls", "--prefix", name, "--paused", url=url)["schedules"]
    assert [s["id"] for s in paused] == [sid]
    assert cli_json("schedules", "ls", "--prefix", name, "--active", url=url)["schedules"] == []

    triggered = run_cli("schedules", "trigger", "--wait", name, url=url)
    assert triggered.returncode == 0, describe(triggered)
    assert "succeeded" in triggered.stdout, describe(triggered)
    assert cli_json("schedules", "resume", sid, url=url)["paused"] is False

    table = run_cli("schedules", "ticks", name, "--limit", "5", url=url)
    assert table.returncode == 0 and "OUTCOME" in table.stdout, describe(table)
    assert cli_json("schedules", "rm", name, url=url) == {"id": sid, "deleted": True}
    gone = run_cli("schedules", "show", name, url=url)
    assert gone.returncode == 1, describe(gone)
    assert gone.stderr == f"skiplock: no schedule named {name!r}\n"
    gone_by_id = run_cli("schedules", "show", sid, url=url)
    assert gone_by_id.stderr == f"skiplock: 404: no schedule with id {sid}\n"


def test_a_url_that_is_not_a_scheduler_is_named(tmp_path: Path) -> None:
    """A real HTTP server that is not skiplock: its answers are reported, never a traceback."""
    task_id = str(uuid.uuid4())
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / task_id).write_text("not json\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    # Port 0: the server binds a port of its own; served from a thread of this test.
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        port = server.server_address[1]
        url = f"http://{LOOPBACK}:{port}"
        answered = run_cli("status", task_id, url=url)
        assert answered.returncode == 1, describe(answered)
        assert answered.stderr == (
            f"skiplock: {url}/tasks/{task_id} answered 200 without JSON: "
            f"is {url} a skiplock scheduler?\n"
        )
        missing = run_cli("status", str(uuid.uuid4()), url=url)
        assert missing.returncode == 1, describe(missing)
        assert (
            missing.stderr.startswith("skiplock: 404: ") and len(missing.stderr.splitlines()) == 1
        )
    finally:
        server.shutdown()
        server.server_close()
        serving.join(10)


def test_schedules_update_changes_only_what_is_given(url: str) -> None:
    name = f"to-update-{uuid.uuid4().hex[:8]}"
    created = cli_json("schedules", "add", name, "@hourly", "echo old", "--paused", url=url)
    changed = cli_json(
        "schedules", "update", name, "--cron", "0 9 * * *", "--tz", "America/New_York",
        "--command", "echo new", "--timeout", "5m", url=url,
    )  # fmt: skip
    assert changed["id"] == created["id"]
    assert (changed["cron"], changed["timezone"], changed["command"]) == (
        "0 9 * * *", "America/New_York", "echo new",
    )  # fmt: skip
    assert changed["timeout_seconds"] == 300
    assert changed["paused"] is True and changed["overlap"] == created["overlap"]
    assert changed["next_fire_times"][0]["local"].endswith(("T09:00:00-05:00", "T09:00:00-04:00"))

    renamed = cli_json("schedules", "update", name, "--name", f"{name}-2", "--no-timeout", url=url)
    assert renamed["name"] == f"{name}-2" and renamed["timeout_seconds"] is None
    nothing = run_cli("schedules", "update", f"{name}-2", url=url)
    assert nothing.returncode == 2, describe(nothing)
    gone = run_cli("schedules", "update", name, "--cron", "@daily", url=url)
    assert gone.returncode == 1 and gone.stderr == f"skiplock: no schedule named {name!r}\n"
    assert cli_json("schedules", "rm", f"{name}-2", url=url)["deleted"] is True
