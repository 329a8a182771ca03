"""`make run`: a whole skiplock cluster on one machine, with output from every process.

Starts an embedded PostgreSQL unless DATABASE_URL or POSTGRES_HOST points elsewhere, then the
coordinator, the scheduler and N workers through devtools/cluster.py, each line they print shown
with its name (and kept in <data-dir>/logs/). Ctrl-C or SIGTERM stops the services (workers
drain their running tasks), then the embedded database.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from common.config import database_url
from devtools.cluster import LOOPBACK, Cluster, port_accepts
from devtools.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

PREFERRED_PG_PORT = 54329
DATABASE_NAME = "skiplock"
# Workers get up to 30 s to drain running tasks after SIGTERM; leave a little on top.
SHUTDOWN_GRACE_SECONDS = 35.0
START_TIMEOUT_SECONDS = 60.0
NAME_WIDTH = 13
DEFAULT_WORKERS = 2

# Each port setting: its flag, the make variable that sets it, its default, whose port it is.
PORT_SETTINGS = {
    "scheduler_port": ("--scheduler-port", "SCHEDULER_PORT", 8081, "scheduler"),
    "coordinator_port": ("--coordinator-port", "COORDINATOR_PORT", 8080, "coordinator"),
    "worker_base_port": ("--worker-base-port", "WORKER_BASE_PORT", 8001, "worker"),
}

_print_lock = threading.Lock()


# Set when nobody reads the output any more (`make run | head`): then the cluster stops too.
output_closed = threading.Event()


def say(name: str, line: str) -> None:
    with _print_lock:
        try:
            sys.stdout.write(f"{name:<{NAME_WIDTH}}| {line}\n")
            sys.stdout.flush()
        except BrokenPipeError:
            output_closed.set()


def note(line: str) -> None:
    say("run", line)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.run", description="Run a local skiplock cluster."
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="number of workers (default 2)"
    )
    for dest, (flag, variable, default, _) in PORT_SETTINGS.items():
        parser.add_argument(
            flag, dest=dest, type=int, default=default,
            help=f"default {default} (make variable {variable}); 0 lets the system choose",
        )  # fmt: skip
    parser.add_argument(
        "--listen-host", default=LOOPBACK,
        help="interface every service binds (default 127.0.0.1; 0.0.0.0 exposes the cluster)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".data"),
        help="embedded database, cluster token and service logs live here (default .data)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    for dest, (flag, *_) in PORT_SETTINGS.items():
        if not 0 <= getattr(args, dest) <= 65535:
            parser.error(f"{flag} must be a port number, 0-65535 (0 lets the system choose)")
    if args.worker_base_port + args.workers - 1 > 65535:
        parser.error("--worker-base-port leaves no room for that many workers")
    return args


def planned_ports(args: argparse.Namespace) -> dict[str, list[int]]:
    """The fixed ports each setting asks for (port 0 asks for none)."""
    workers = [args.worker_base_port + i for i in range(args.workers)]
    planned = {
        "scheduler_port": [args.scheduler_port],
        "coordinator_port": [args.coordinator_port],
        "worker_base_port": workers,
    }
    return {dest: [p for p in ports if p] for dest, ports in planned.items()}


def ports_in_use(args: argparse.Namespace) -> dict[str, list[int]]:
    planned = planned_ports(args).items()
    busy = {dest: [p for p in ports if port_accepts(p)] for dest, ports in planned}
    return {dest: ports for dest, ports in busy.items() if ports}


def free_instead(first: int, count: int, avoid: set[int]) -> int:
    """A port near `first` (1000 apart) where `count` ports in a row are free now, else 0."""
    for candidate in range(first + 1000, 65536 - count, 1000):
        ports = range(candidate, candidate + count)
        if not avoid.intersection(ports) and not any(port_accepts(p) for p in ports):
            return candidate
    return 0


def port_fix(args: argparse.Namespace, busy: dict[str, list[int]]) -> list[str]:
    """What to say when ports are taken: which, and the exact command that avoids them."""
    taken = [f"{p} ({PORT_SETTINGS[dest][3]})" for dest, ports in busy.items() for p in ports]
    planned = {p for ports in planned_ports(args).values() for p in ports}
    settings = {dest: getattr(args, dest) for dest in PORT_SETTINGS}
    for dest in busy:
        count = args.workers if dest == "worker_base_port" else 1
        settings[dest] = free_instead(settings[dest], count, planned)
    variables = [f"WORKERS={args.workers}"] if args.workers != DEFAULT_WORKERS else []
    flags = [f"--workers={args.workers}"]
    for dest, (flag, variable, default, _) in PORT_SETTINGS.items():
        if settings[dest] != default:
            variables.append(f"{variable}={settings[dest]}")
            flags.append(f"{flag}={settings[dest]}")
    return [
        f"{'port' if len(taken) == 1 else 'ports'} {', '.join(taken)} already in use"
        " (another `make run`?). Start on free ports with:",
        f"    {' '.join(variables)} make run",
        f"or: .venv/bin/python -m devtools.run {' '.join(flags)}",
    ]


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


def pg_port_free() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the server will: lingering TIME_WAIT connections must not make the port look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, PREFERRED_PG_PORT))
        except OSError:
            return False
    return True


def start_database(data_dir: Path) -> EmbeddedPostgres:
    # The usual port when free, so that a kept URL goes on working; else any free port.
    pg = EmbeddedPostgres(data_dir / "pg", PREFERRED_PG_PORT if pg_port_free() else 0)
    note(f"starting embedded PostgreSQL in {pg.data_dir} ...")
    pg.start()
    pg.ensure_database(DATABASE_NAME)
    took = pg.last_start_seconds or 0.0
    note(f"PostgreSQL ready on 127.0.0.1:{pg.port} in {took:.1f}s (log: {pg.log_path})")
    return pg


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: Cluster | None = None
        self.pg: EmbeddedPostgres | None = None
        self.stop_requested = threading.Event()
        self.signals_seen = 0

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals_seen += 1
        if self.signals_seen == 1:
            note(f"{signal.Signals(signum).name}: stopping (again to force)")
            self.stop_requested.set()
            self.signal_services(signal.SIGTERM)  # also ends a wait for one to start
        else:
            note("forcing: killing all services")
            self.signal_services(signal.SIGKILL)

    def signal_services(self, signum: int) -> None:
        for proc in self.cluster.processes() if self.cluster else []:
            if proc.is_running():
                proc.send_signal(signum)

    def database(self, data_dir: Path) -> str:
        if os.environ.get("DATABASE_URL") or os.environ.get("POSTGRES_HOST"):
            note("using the database from DATABASE_URL / POSTGRES_HOST")
            return database_url(os.environ)
        self.pg = start_database(data_dir)
        return self.pg.url(DATABASE_NAME)

    def run(self) -> int:
        busy = ports_in_use(self.args)
        if busy:
            for line in port_fix(self.args, busy):
                note(line)
            return 2
        data_dir = Path(self.args.data_dir)
        try:
            url = self.database(data_dir)
        except EmbeddedPostgresError as err:
            note(f"embedded PostgreSQL failed to start: {err}")
            return 1
        self.cluster = Cluster(
            url,
            data_dir.absolute() / "logs",
            token=cluster_token(data_dir),
            listen_host=self.args.listen_host,
            worker_output=Path.cwd() / "worker_output",
            echo=say,
            inherit_env=True,
            cwd=Path.cwd(),
        )
        try:
            return self.supervise(self.cluster)
        finally:
            self.shutdown(self.cluster)

    def start(self, cluster: Cluster) -> None:
        """Coordinator first (workers dial it), then the scheduler and the workers; returns once
        the scheduler is ready."""
        a = self.args
        cluster.start_coordinator(port=a.coordinator_port, timeout=START_TIMEOUT_SECONDS)
        cluster.start_scheduler(wait=False, timeout=START_TIMEOUT_SECONDS, port=a.scheduler_port)
        for i in range(1, a.workers + 1):
            port = a.worker_base_port + i - 1 if a.worker_base_port else 0
            cluster.start_worker(f"worker-{i}", port=port, wait=False)
        cluster.wait_scheduler_ready(START_TIMEOUT_SECONDS)

    def supervise(self, cluster: Cluster) -> int:
        try:
            self.start(cluster)
        except AssertionError as failed:
            if self.stop_requested.is_set():
                return 0
            note(str(failed).splitlines()[0])
            return 1
        self.banner(cluster)
        while not self.stop_requested.wait(0.2) and not output_closed.is_set():
            for proc in cluster.processes():
                if proc.returncode is not None:
                    note(f"{proc.name} exited unexpectedly with code {proc.returncode}; stopping")
                    return 1
        return 0

    def banner(self, cluster: Cluster) -> None:
        url = cluster.scheduler_url
        workers = ", ".join(f"{LOOPBACK}:{p}" for p in cluster.worker_ports.values()) or "none"
        lines = [
            "",
            f"skiplock is up: scheduler {url}  (API docs: {url}/docs)",
            f"  coordinator {cluster.coordinator_targets}; workers {workers}",
            f"  logs in {cluster.log_dir}",
            "  try:",
            f"    curl -s -X POST {url}/schedule -H 'Content-Type: application/json' \\",
            "         -d '{\"command\": \"echo hello from skiplock\", \"delay_seconds\": 5}'",
            f"    curl -s '{url}/status?task_id=<task_id from above>'",
            "  Ctrl-C stops everything.",
            "",
        ]
        for line in lines:
            note(line)

    def shutdown(self, cluster: Cluster) -> None:
        running = [p for p in cluster.processes() if p.is_running()]
        if running:
            note(f"stopping {', '.join(p.name for p in running)} ...")
        for proc in cluster.stop(SHUTDOWN_GRACE_SECONDS):
            note(f"{proc.name} did not stop in time; killed it")
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
