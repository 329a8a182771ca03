"""`make run`: a whole skiplock cluster on one machine, with output from every process.

Starts an embedded PostgreSQL unless DATABASE_URL or POSTGRES_HOST points elsewhere, then the
scheduler, the coordinator and N workers as child processes. Ctrl-C or SIGTERM stops the
children (workers drain their running tasks), then the embedded database.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from devtools.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

PREFERRED_PG_PORT = 54329
DATABASE_NAME = "skiplock"
# Workers get up to 30 s to drain running tasks after SIGTERM; leave a little on top.
SHUTDOWN_GRACE_SECONDS = 35.0
NAME_WIDTH = 12

_print_lock = threading.Lock()


def say(name: str, line: str) -> None:
    with _print_lock:
        sys.stdout.write(f"{name:<{NAME_WIDTH}}| {line}\n")
        sys.stdout.flush()


def note(line: str) -> None:
    say("run", line)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.run", description="Run a local skiplock cluster."
    )
    parser.add_argument("--workers", type=int, default=2, help="number of workers (default 2)")
    parser.add_argument("--scheduler-port", type=int, default=8081)
    parser.add_argument("--coordinator-port", type=int, default=8080)
    parser.add_argument(
        "--worker-base-port", type=int, default=8001, help="worker i listens on base + i - 1"
    )
    parser.add_argument(
        "--listen-host", default="127.0.0.1",
        help="interface every service binds (default 127.0.0.1; 0.0.0.0 exposes the cluster)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".data"),
        help="embedded database and cluster token live here (default .data)",
    )
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    return args


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server will: lingering TIME_WAIT connections must not make the port look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pick_pg_port() -> int:
    if port_free(PREFERRED_PG_PORT):
        return PREFERRED_PG_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def cluster_token(data_dir: Path) -> str:
    """SKIPLOCK_CLUSTER_TOKEN from the environment, else one kept in data_dir (mode 0600)."""
    from_env = os.environ.get("SKIPLOCK_CLUSTER_TOKEN", "").strip()
    if from_env:
        return from_env
    path = data_dir / "cluster_token"
    if path.exists():
        stored = path.read_text().strip()
        if stored:
            return stored
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(tmp, path)
    return token


def start_database(data_dir: Path) -> EmbeddedPostgres:
    pg = EmbeddedPostgres(data_dir / "pg", pick_pg_port())
    note(f"starting embedded PostgreSQL in {pg.data_dir} ...")
    pg.start()
    pg.ensure_database(DATABASE_NAME)
    took = pg.last_start_seconds or 0.0
    note(f"PostgreSQL ready on 127.0.0.1:{pg.port} in {took:.1f}s (log: {pg.log_path})")
    return pg


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    reader: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C reaches only the launcher, which then stops children
            # in order instead of all of them racing on SIGINT.
            process_group=0,
        )
        assert self.proc.stdout is not None
        self.reader = threading.Thread(
            target=self._pump, args=(self.proc.stdout,), name=f"out-{self.name}", daemon=True
        )
        self.reader.start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            say(self.name, raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, signum: int) -> None:
        # Popen.send_signal already ignores a child that has just exited.
        if self.proc is not None:
            self.proc.send_signal(signum)


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[Child] = []
        self.pg: EmbeddedPostgres | None = None
        self.stop_requested = threading.Event()
        self.signals_seen = 0

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals_seen += 1
        if self.signals_seen == 1:
            note(f"{signal.Signals(signum).name}: stopping (again to force)")
        else:
            note("forcing: killing all children")
            for child in self.children:
                child.signal(signal.SIGKILL)
        self.stop_requested.set()

    def prepare_env(self, data_dir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if not env.get("DATABASE_URL") and not env.get("POSTGRES_HOST"):
            self.pg = start_database(data_dir)
            env["DATABASE_URL"] = self.pg.url(DATABASE_NAME)
        else:
            note("using the database from DATABASE_URL / POSTGRES_HOST")
        env["SKIPLOCK_CLUSTER_TOKEN"] = cluster_token(data_dir)
        return env

    def plan(self, env: dict[str, str]) -> list[Child]:
        a = self.args
        py = sys.executable
        # Loopback unless asked otherwise: the HTTP API runs any command it is given.
        host = a.listen_host
        children = [
            Child("scheduler",
                  [py, "-m", "scheduler_svc", f"--scheduler_port={host}:{a.scheduler_port}"], env),
            Child("coordinator",
                  [py, "-m", "coordinator_svc", f"--coordinator_port={host}:{a.coordinator_port}"],
                  env),
        ]
        for i in range(1, a.workers + 1):
            worker_env = env | {"WORKER_ID": f"worker-{i}", "WORKER_ADDRESS": "127.0.0.1"}
            argv = [
                py, "-m", "worker_svc",
                f"--worker_port={host}:{a.worker_base_port + i - 1}",
                f"--coordinator=127.0.0.1:{a.coordinator_port}",
            ]
            children.append(Child(f"worker-{i}", argv, worker_env))
        return children

    def busy_ports(self) -> list[int]:
        a = self.args
        ports = [a.scheduler_port, a.coordinator_port]
        ports += [a.worker_base_port + i for i in range(a.workers)]
        return [p for p in ports if port_accepts(p)]

    def run(self) -> int:
        busy = self.busy_ports()
        if busy:
            note(f"ports already in use: {busy} (another `make run`?); pick others with flags")
            return 2
        try:
            env = self.prepare_env(Path(self.args.data_dir))
        except EmbeddedPostgresError as err:
            note(f"embedded PostgreSQL failed to start: {err}")
            return 1
        try:
            return self.supervise(env)
        finally:
            self.shutdown()

    def supervise(self, env: dict[str, str]) -> int:
        if self.stop_requested.is_set():
            return 0
        self.children = self.plan(env)
        scheduler, coordinator, *workers = self.children
        scheduler.start()
        coordinator.start()
        # Workers register at once; give the coordinator a moment to listen so they don't
        # start with a burst of connection errors.
        self.wait_port(self.args.coordinator_port, coordinator, timeout=20)
        for worker in workers:
            worker.start()
        if self.wait_port(self.args.scheduler_port, scheduler, timeout=30):
            self.banner()
        while not self.stop_requested.wait(0.2):
            for child in self.children:
                code = child.poll()
                if code is not None:
                    note(f"{child.name} exited unexpectedly with code {code}; shutting down")
                    return 1
        return 0

    def wait_port(self, port: int, child: Child, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            if child.poll() is not None:
                return False
            if port_accepts(port):
                return True
            time.sleep(0.1)
        return False

    def banner(self) -> None:
        url = f"http://127.0.0.1:{self.args.scheduler_port}"
        lines = [
            "",
            f"skiplock is up: scheduler {url}  (API docs: {url}/docs)",
            f"  coordinator 127.0.0.1:{self.args.coordinator_port}, {self.args.workers} worker(s)",
            "  try:",
            f"    curl -s -X POST {url}/schedule -H 'Content-Type: application/json' \\",
            "         -d '{\"command\": \"echo hello from skiplock\", \"delay_seconds\": 5}'",
            f"    curl -s '{url}/status?task_id=<task_id from above>'",
            "  Ctrl-C stops everything.",
            "",
        ]
        for line in lines:
            note(line)

    def shutdown(self) -> None:
        running = [c for c in self.children if c.poll() is None]
        if running:
            note(f"stopping {', '.join(c.name for c in running)} ...")
        for child in running:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                note(f"{child.name} did not stop in time; killing it")
                child.signal(signal.SIGKILL)
                child.proc.wait()
        for child in self.children:
            if child.reader is not None:
                child.reader.join(timeout=2)
        if self.pg is not None:
            note("stopping embedded PostgreSQL")
            try:
                self.pg.stop()
            except EmbeddedPostgresError as err:
                note(f"could not stop PostgreSQL cleanly: {err}")
        note("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    launcher = Launcher(parse_args(argv))
    signal.signal(signal.SIGINT, launcher.on_signal)
    signal.signal(signal.SIGTERM, launcher.on_signal)
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
