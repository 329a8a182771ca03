"""What a command sees and what it leaves behind, on a real cluster with real bash: its
environment holds the minimal base, the worker's --pass-env allow-list and the attempt's
identity, never the cluster's secrets; it runs with its own settings; and nothing it started,
even what left its session, outlives the attempt."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cluster import Cluster, wait_for
from devtools.tasks import submit
from tests.support.pids import pid_alive, read_pids

# The queue of the worker that runs its commands as `nobody`.
NOBODY = "as-nobody"
# The queue of the worker a test shuts down.
DRAINING = "drain-me"
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
        if os.geteuid() == 0:  # only root may run commands as another user
            as_nobody = [f"--queues={NOBODY}", "--run-as=nobody"]
            cluster.start_worker("worker-nobody", extra_args=as_nobody)
        draining = [f"--queues={DRAINING}", "--drain-timeout=1"]
        cluster.start_worker("worker-draining", extra_args=draining)
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


# --- per-task execution settings ----------------------------------------------------------------


def test_a_tasks_own_env_is_added_and_shown(contained):
    env = environment_of(contained, env={"GREETING": "hello world", "PATH": "/usr/bin:/bin"})
    assert env["GREETING"] == "hello world"
    assert env["PATH"] == "/usr/bin:/bin"  # the task's own wins over the base
    assert not [name for name in env if name in SECRETS], env
    detail = contained.http.get(f"/tasks/{env['_task_id']}").json()
    assert detail["env"] == {"GREETING": "hello world", "PATH": "/usr/bin:/bin"}
    assert (detail["cwd"], detail["success_exit_codes"]) == (None, [0])


def test_the_working_directory_is_honoured_and_a_missing_one_is_a_clear_failure(
    contained, tmp_path
):
    task_id = submit(contained, "pwd", cwd=str(tmp_path))
    assert finished(contained, task_id)["status"] == "succeeded"
    assert output(contained, task_id) == f"{tmp_path}\n"
    assert contained.http.get(f"/tasks/{task_id}").json()["cwd"] == str(tmp_path)

    missing = tmp_path / "not-here"
    task_id = submit(contained, "pwd", cwd=str(missing))
    detail = finished(contained, task_id)
    assert (detail["status"], detail["last_reason"]) == ("failed", "spawn_failed")
    assert str(missing) in detail["attempts"][0]["detail"]
    assert "does not exist" in detail["attempts"][0]["detail"]


def test_success_exit_codes_decide_success(contained):
    three = submit(contained, "exit 3", success_exit_codes=[0, 3])
    four = submit(contained, "exit 4", success_exit_codes=[0, 3])
    zero = submit(contained, "exit 0", success_exit_codes=[3])
    assert finished(contained, three)["status"] == "succeeded"
    assert finished(contained, three)["exit_code"] == 3
    assert finished(contained, four)["status"] == "failed"
    assert finished(contained, zero)["status"] == "failed"


def test_the_output_cap_is_per_task(contained):
    task_id = submit(contained, "printf 'abcdefghij%.0s' $(seq 100)", output_cap_bytes=10)
    assert finished(contained, task_id)["status"] == "succeeded"
    response = contained.http.get(f"/tasks/{task_id}/output")
    assert response.headers["x-skiplock-output-bytes"] == "1000"
    assert response.text.startswith("abcdefghij") and response.text.endswith("abcdefghij")
    assert len(response.content) < 200
    assert contained.http.get(f"/tasks/{task_id}").json()["output_cap_bytes"] == 10


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("env", {"SKIPLOCK_CLUSTER_TOKEN": "x"}, "reserved"),
        ("env", {"1BAD": "x"}, "not a variable name"),
        ("env", {"A=B": "x"}, "not a variable name"),
        ("env", {"A": "x\u0000y"}, "NUL"),
        ("env", {"A": 1}, "string"),
        ("env", {f"V{i}": "x" for i in range(257)}, "256"),
        ("env", {"A": "x" * 70000}, "65536"),
        ("cwd", "relative/dir", "absolute"),
        ("cwd", "/a\u0000b", "NUL"),
        ("success_exit_codes", [256], "255"),
        ("success_exit_codes", [], "at least 1"),
        ("output_cap_bytes", 2 * 1024 * 1024, "1048576"),
    ],
)
def test_bad_execution_settings_are_refused_with_a_reason(contained, field, value, says):
    response = contained.http.post("/schedule", json={"command": "true", field: value})
    assert response.status_code == 422, response.text
    assert says in response.text
    schedule = {"name": f"bad-{field}", "cron": "@hourly", "command": "true", field: value}
    assert contained.http.post("/schedules", json=schedule).status_code == 422


def test_a_schedules_runs_carry_its_execution_settings(contained, tmp_path):
    body = {
        "name": "with-settings",
        "cron": "@yearly",
        "command": "pwd; echo $GREETING; exit 3",
        "env": {"GREETING": "from the schedule"},
        "cwd": str(tmp_path),
        "success_exit_codes": [3],
    }
    created = contained.http.post("/schedules", json=body)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["env"] == body["env"] and schedule["success_exit_codes"] == [3]
    triggered = contained.http.post(f"/schedules/{schedule['id']}/trigger")
    assert triggered.status_code == 201, triggered.text
    task_id = triggered.json()["task"]["task_id"]
    assert finished(contained, task_id)["status"] == "succeeded"
    assert output(contained, task_id) == f"{tmp_path}\nfrom the schedule\n"
    patched = contained.http.patch(
        f"/schedules/{schedule['id']}", json={"cwd": None, "env": {}}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["cwd"], patched.json()["env"]) == (None, {})


# --- nothing outlives its attempt -------------------------------------------------------------

# A grandchild that leaves the command's session and process group (setsid) from a subshell
# that exits at once, so it is orphaned while the command still runs; it writes its pid, then
# ticks into the attempt's output file until killed.
# The escapee ignores SIGPIPE, so the output pipe's closing at the attempt's end does not end it
# too: only the reaper does.
ESCAPE = (
    "( setsid bash -c 'trap \"\" PIPE; echo $$ > {pidfile}; "
    "while true; do echo tick; sleep 0.05; done' & ); "
    "until [ -s {pidfile} ]; do sleep 0.01; done; "
)


def gone(pid: int) -> bool:
    return not pid_alive(pid)


def ended_attempt(cluster: Cluster, task_id: str) -> dict[str, Any]:
    """The task's latest attempt once its worker's report of the end has been recorded (a
    cancelled task is cancelled before that report arrives)."""

    def ended() -> dict[str, Any]:
        attempts = cluster.http.get(f"/tasks/{task_id}").json()["attempts"]
        last: dict[str, Any] = attempts[-1] if attempts else {}
        return last if last.get("ended_at") and last.get("output_path") else {}

    return wait_for(ended, 30, interval=0.05, message=f"the end of {task_id}'s attempt")


def assert_escapee_killed(cluster: Cluster, task_id: str, pidfile: Path) -> None:
    (pid,) = read_pids(pidfile, 1)
    wait_for(lambda: gone(pid), 10, message=f"escaped pid {pid} of {task_id} to be killed")
    path = Path(ended_attempt(cluster, task_id)["output_path"])
    size = path.stat().st_size
    # Dead, so it cannot write: the file keeps its size once the attempt has ended.
    assert not pid_alive(pid) and path.stat().st_size == size


def test_an_escaped_child_is_killed_when_the_command_succeeds(contained, tmp_path):
    pidfile = tmp_path / "pid"
    task_id = submit(contained, ESCAPE.format(pidfile=pidfile) + "echo done")
    assert finished(contained, task_id)["status"] == "succeeded"
    assert_escapee_killed(contained, task_id, pidfile)


def test_an_escaped_child_is_killed_when_the_command_times_out(contained, tmp_path):
    pidfile = tmp_path / "pid"
    task_id = submit(contained, ESCAPE.format(pidfile=pidfile) + "sleep 300", timeout_seconds=1)
    detail = finished(contained, task_id)
    assert (detail["status"], detail["last_reason"]) == ("failed", "timeout")
    assert_escapee_killed(contained, task_id, pidfile)


def test_an_escaped_child_is_killed_when_the_task_is_cancelled(contained, tmp_path):
    pidfile = tmp_path / "pid"
    task_id = submit(contained, ESCAPE.format(pidfile=pidfile) + "sleep 300")
    (pid,) = read_pids(pidfile, 1)
    assert pid_alive(pid)
    assert contained.http.post(f"/tasks/{task_id}/cancel").status_code == 200
    assert finished(contained, task_id)["status"] == "cancelled"
    assert_escapee_killed(contained, task_id, pidfile)


def test_an_escaped_child_is_killed_when_its_worker_shuts_down(contained, tmp_path):
    """SIGTERM: the worker drains, stops the command at the drain timeout, and takes what the
    command left behind with it instead of leaving it to init."""
    pidfile = tmp_path / "pid"
    task_id = submit(contained, ESCAPE.format(pidfile=pidfile) + "sleep 300", queue=DRAINING)
    (pid,) = read_pids(pidfile, 1)
    worker = contained.workers["worker-draining"]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    assert not pid_alive(pid), f"escaped pid {pid} of {task_id} outlived its worker"


def test_a_double_forked_setsid_sleep_is_gone_after_success(contained, tmp_path):
    """The issue's case: `setsid sleep 300 &` from a subshell, the command itself ends at once."""
    pidfile = tmp_path / "pid"
    task_id = submit(contained, f"( (setsid sleep 300 & echo $! > {pidfile}) & ); sleep 0.2")
    assert finished(contained, task_id)["status"] == "succeeded"
    (pid,) = read_pids(pidfile, 1)
    wait_for(lambda: gone(pid), 10, message=f"setsid sleep {pid} to be killed")


# --- per-task resource limits -------------------------------------------------------------------


def test_limits_bind_the_command_and_every_process_it_starts(contained):
    """Hard limits: a grandchild sees them too, and cannot raise them."""
    task_id = submit(
        contained,
        "ulimit -Hv; ulimit -Ht; ulimit -Hn; "
        "bash -c 'ulimit -Hn; ulimit -n 4096 2>/dev/null || echo refused'",
        memory_limit_bytes=512 * 1024 * 1024,
        cpu_limit_seconds=30,
        open_files_limit=64,
    )
    assert finished(contained, task_id)["status"] == "succeeded"
    assert output(contained, task_id) == "524288\n30\n64\n64\nrefused\n"
    detail = contained.http.get(f"/tasks/{task_id}").json()
    assert (detail["memory_limit_bytes"], detail["cpu_limit_seconds"]) == (512 * 1024 * 1024, 30)
    assert detail["open_files_limit"] == 64


def test_a_command_over_its_memory_limit_fails(contained):
    command = "python3 -c 'bytearray(256 * 1024 * 1024)'"
    limited = submit(contained, command, memory_limit_bytes=128 * 1024 * 1024)
    detail = finished(contained, limited)
    assert (detail["status"], detail["last_reason"]) == ("failed", "exit_code")
    assert "MemoryError" in output(contained, limited)


def test_a_busy_command_over_its_cpu_limit_is_killed(contained):
    task_id = submit(contained, "while :; do :; done", cpu_limit_seconds=1, timeout_seconds=60)
    detail = finished(contained, task_id)
    # Soft and hard limits are equal, so the kernel's SIGKILL (137) comes with or instead of
    # its SIGXCPU (152); long before the 60 s timeout either way.
    assert detail["status"] == "failed" and detail["exit_code"] in (137, 152)
    assert detail["last_reason"] == "exit_code"


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory_limit_bytes", 1024), ("cpu_limit_seconds", 0), ("open_files_limit", 8),
     ("open_files_limit", 2_000_000)],
)  # fmt: skip
def test_limits_out_of_bounds_are_refused(contained, field, value):
    response = contained.http.post("/schedule", json={"command": "true", field: value})
    assert response.status_code == 422, response.text
    assert field in response.text


@pytest.mark.skipif(os.geteuid() != 0, reason="running commands as another user needs root")
def test_a_worker_run_as_another_user_runs_commands_as_that_user(contained):
    task_id = submit(contained, "id -un; id -gn; echo $HOME", queue=NOBODY)
    detail = finished(contained, task_id)
    assert (detail["status"], detail["worker_id"]) == ("succeeded", "worker-nobody")
    assert output(contained, task_id) == "nobody\nnogroup\n/nonexistent\n"
