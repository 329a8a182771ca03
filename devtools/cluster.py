"""skiplock's services as real processes: `make run`, the tests and the benchmarks all start,
wait on and stop them through this module.

Each service is asked for port 0 and tells the port the system gave it through its
`--ready-file` (common/ready.py), so nothing guesses a free port that another process could take
first. A process runs in its own process group, which `cleanup` kills whole; its output goes to
a log file and, for `make run`, to the terminal too. Everything waits on conditions with
deadlines (`wait_for`), never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

import httpx
import psycopg

from common.ready import Ready, read_ready_file

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
T = TypeVar("T")
# A service's argv before its flags, from its module name: `python -m MODULE` by default; an
# installed package's console scripts instead (tests/test_packaging.py).
Launcher = Callable[[str], list[str]]

# Configuration the services read from the environment: a harness sets what it means explicitly
# instead of inheriting whatever the developer's shell exports.
_SCRUBBED_PREFIXES = ("DATABASE_URL", "POSTGRES_", "SKIPLOCK_", "WORKER_")

# Receives each line a process prints (without the newline), with the process's name.
Echo = Callable[[str, str], None]


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    Exceptions listed in `ignore` count as "not yet". On timeout raises AssertionError naming
    `message` (a str, or a callable producing one, e.g. to include logs).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore as err:
            last_error = err
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def service_env(
    env: Mapping[str, str | None] | None = None, inherit: bool = False
) -> dict[str, str]:
    """os.environ (minus service configuration unless `inherit`), plus `env` (a None value
    removes a key)."""
    merged = {
        k: v for k, v in os.environ.items() if inherit or not k.startswith(_SCRUBBED_PREFIXES)
    }
    merged["PYTHONUNBUFFERED"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class ServiceProcess:
    """One child process with stdout+stderr appended to `log_path` (and passed to `echo`, line
    by line, when given).

    It runs in its own process group so `cleanup` also reaps anything it spawned there. With a
    `ready_file` (passed to the service as --ready-file by whoever built `args`), `wait_ready`
    returns the address the service announced.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log_path: Path,
        env: Mapping[str, str | None] | None = None,
        cwd: Path = REPO_ROOT,
        *,
        ready_file: Path | None = None,
        echo: Echo | None = None,
        inherit_env: bool = False,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self.env = service_env(env, inherit_env)
        self.cwd = cwd
        self.ready_file = ready_file
        self.echo = echo
        self.proc: subprocess.Popen[bytes] | None = None
        # What the service announced in its ready file, once wait_ready has read it.
        self.ready: Ready | None = None
        self._log: IO[bytes] | None = None
        self._pump: threading.Thread | None = None

    @classmethod
    def python_module(
        cls,
        name: str,
        module: str,
        args: Iterable[str],
        log_path: Path,
        env: Mapping[str, str | None] | None = None,
        ready_file: Path | None = None,
    ) -> ServiceProcess:
        """`python -m module args`; with `ready_file`, also `--ready-file=ready_file`."""
        argv = [*python_module(module), *args]
        if ready_file is not None:
            argv.append(f"--ready-file={ready_file}")
        return cls(name, argv, log_path, env, ready_file=ready_file)

    def start(self) -> ServiceProcess:
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.ready_file is not None:
            self.ready_file.unlink(missing_ok=True)
        self.ready = None
        if self._pump is not None:  # the output of the previous run is still being copied
            self._pump.join(5)
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._log.write(f"==== start {' '.join(self.args)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log if self.echo is None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C at the terminal reaches only whoever started it, and
            # killing the group reaps what the service spawned.
            process_group=0,
        )
        if self.echo is not None:
            self._pump = threading.Thread(
                target=self._copy_output, name=f"out-{self.name}", daemon=True
            )
            self._pump.start()
        return self

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self._log is not None
        assert self.echo is not None
        log, stream = self._log, self.proc.stdout
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            self.echo(self.name, raw.decode(errors="replace").rstrip("\n"))
        stream.close()

    def restart(self, timeout: float = 10.0) -> ServiceProcess:
        """Stop (gracefully, then by force) and start again with the same arguments and log."""
        self.stop(timeout)
        return self.start()

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def poll(self) -> int | None:
        return self.returncode

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, signum: int) -> None:
        # Popen.send_signal ignores a child that has already been reaped.
        self._require().send_signal(signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the process alone, as a crash would: whatever it spawned is left running."""
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit and return the exit code; raises subprocess.TimeoutExpired."""
        return self._require().wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code (None: never run)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
        return self.proc.wait()

    def wait_ready(self, timeout: float = 30.0) -> Ready:
        """The address the service announced in its ready file, once it has; AssertionError if
        it exits first or takes longer than `timeout`."""
        path = self.ready_file
        if path is None:
            raise RuntimeError(f"{self.name} was started without a ready file")

        def announced() -> Ready | None:
            if not self.is_running():
                raise AssertionError(f"{self.name} exited before it was ready\n{self.describe()}")
            ready = read_ready_file(path)
            return ready if ready is not None and ready.pid == self.pid else None

        self.ready = wait_for(
            announced, timeout, message=lambda: f"{self.name} to listen\n{self.describe()}"
        )
        assert self.ready is not None
        return self.ready

    def cleanup(self) -> None:
        """Teardown: kill the process and its group, close the log."""
        if self.proc is not None:
            self._kill_group()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        if self._pump is not None:
            self._pump.join(5)
            self._pump = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self, tail_lines: int = 60) -> str:
        """Name, state and the end of the log: for assertion messages."""
        state = "running" if self.is_running() else f"exited with {self.returncode}"
        tail = "\n".join(self.log_text().splitlines()[-tail_lines:])
        return f"--- {self.name} ({state}), log {self.log_path}:\n{tail}"

    def _kill_group(self) -> None:
        assert self.proc is not None
        # The group id is the leader's pid (process_group=0); members may outlive the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _require(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"ServiceProcess({self.name!r}, pid={pid}, returncode={self.returncode})"


class Cluster:
    """Scheduler, coordinators and workers against one database, each on a port of its own
    choosing (port 0) unless told one.

    Nothing starts in the constructor: call `start()` for the usual shape, or the `start_*`
    methods one by one. `stop()` kills whatever is left. `make run` passes `echo` (every line
    to the terminal), `inherit_env` (the developer's environment reaches the services),
    `listen_host` and its own ports.
    """

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        *,
        token: str | None = None,
        env: Mapping[str, str | None] | None = None,
        launcher: Launcher = python_module,
        listen_host: str = LOOPBACK,
        worker_output: Path | None = None,
        echo: Echo | None = None,
        inherit_env: bool = False,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.database_url = database_url
        self.launcher = launcher
        self.log_dir = log_dir
        self.token = token if token is not None else "test-" + secrets.token_hex(16)
        self.extra_env = dict(env or {})
        self.listen_host = listen_host
        # Where workers write command output: worker_output/<worker id> under log_dir unless
        # given (then the directory itself, shared by the workers).
        self.worker_output = worker_output
        self.echo = echo
        self.inherit_env = inherit_env
        self.cwd = cwd
        self.scheduler: ServiceProcess | None = None
        self.scheduler_port: int | None = None
        self.coordinators: list[ServiceProcess] = []
        self.coordinator_ports: list[int] = []
        self.workers: dict[str, ServiceProcess] = {}
        self.worker_ports: dict[str, int] = {}
        self._client: httpx.Client | None = None
        self._serial = 0

    # -- shape ----------------------------------------------------------------------------

    def start(self, workers: int = 2, coordinators: int = 1, slots: int = 4) -> Cluster:
        for _ in range(coordinators):
            self.start_coordinator()
        self.start_scheduler()
        for i in range(1, workers + 1):
            self.start_worker(f"worker-{i}", slots=slots)
        return self

    def env(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
        base: dict[str, str | None] = {
            "DATABASE_URL": self.database_url,
            "SKIPLOCK_CLUSTER_TOKEN": self.token or None,
        }
        return base | self.extra_env | dict(extra or {})

    def start_scheduler(
        self,
        extra_args: Sequence[str] = (),
        wait: bool = True,
        timeout: float = 30.0,
        port: int | None = None,
    ) -> ServiceProcess:
        """Start the scheduler and wait until it listens, and with `wait` until /readyz is 200.
        A restarted scheduler keeps its port, so `http` and `scheduler_url` stay valid."""
        if self.scheduler is not None and self.scheduler.is_running():
            raise RuntimeError("the scheduler is already running")
        port = port if port is not None else self.scheduler_port or 0
        self.scheduler = self._spawn(
            "scheduler",
            "scheduler_svc",
            [f"--scheduler_port={self.listen_host}:{port}", *extra_args],
            self.env(),
        )
        self.scheduler_port = self.scheduler.wait_ready(timeout).port
        if wait:
            self.wait_scheduler_ready(timeout)
        return self.scheduler

    def start_coordinator(
        self, extra_args: Sequence[str] = (), port: int = 0, timeout: float = 30.0
    ) -> ServiceProcess:
        """Start a coordinator and wait until it serves; `port` reuses an earlier one's port
        (e.g. after killing it), so that workers dialing it find it again."""
        index = len(self.coordinators) + 1
        proc = self._spawn(
            f"coordinator-{index}",
            "coordinator_svc",
            [f"--coordinator_port={self.listen_host}:{port}", *extra_args],
            self.env(),
        )
        self.coordinators.append(proc)
        bound = proc.wait_ready(timeout).port
        if bound not in self.coordinator_ports:
            self.coordinator_ports.append(bound)
        return proc

    def start_worker(
        self,
        worker_id: str | None = None,
        slots: int = 4,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        port: int = 0,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> ServiceProcess:
        """Start a worker dialing every coordinator started so far; wait until it listens, and
        with `wait` until a coordinator has recorded its heartbeat."""
        if not self.coordinator_ports:
            raise RuntimeError("start a coordinator before workers")
        if worker_id is None:
            worker_id = f"worker-{len(self.workers) + 1}"
        running = self.workers.get(worker_id)
        if running is not None and running.is_running():
            raise RuntimeError(f"worker {worker_id} is already running")
        output_dir = self.worker_output or self.log_dir / "worker_output" / worker_id
        args = [
            f"--worker_port={self.listen_host}:{port}",
            f"--coordinator={self.coordinator_targets}",
            f"--slots={slots}",
            f"--output-dir={output_dir}",
            *extra_args,
        ]
        worker_env = self.env({"WORKER_ID": worker_id, "WORKER_ADDRESS": LOOPBACK, **(env or {})})
        started_at = self._database_now() if wait else None
        proc = self._spawn(worker_id, "worker_svc", args, worker_env)
        self.workers[worker_id] = proc
        self.worker_ports[worker_id] = proc.wait_ready(timeout).port
        if started_at is not None:
            self.wait_registered(proc, worker_id, started_at, timeout)
        return proc

    # -- access ---------------------------------------------------------------------------

    @property
    def scheduler_url(self) -> str:
        if self.scheduler_port is None:
            raise RuntimeError("the scheduler was not started")
        return f"http://{LOOPBACK}:{self.scheduler_port}"

    @property
    def coordinator_targets(self) -> str:
        """The --coordinator value for workers: host:port[,host:port...]."""
        return ",".join(f"{LOOPBACK}:{port}" for port in self.coordinator_ports)

    @property
    def http(self) -> httpx.Client:
        """A client for the scheduler's HTTP API (base URL set, 10 s timeout)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.scheduler_url, timeout=10.0)
        return self._client

    def processes(self) -> list[ServiceProcess]:
        procs = [self.scheduler] if self.scheduler is not None else []
        return procs + self.coordinators + list(self.workers.values())

    def logs(self, tail_lines: int = 60) -> str:
        return "\n".join(p.describe(tail_lines) for p in self.processes())

    # -- waiting --------------------------------------------------------------------------

    def wait_scheduler_ready(self, timeout: float = 30.0) -> None:
        scheduler = self.scheduler
        assert scheduler is not None
        url = f"{self.scheduler_url}/readyz"

        def ready() -> bool:
            self._check_alive(scheduler)
            try:
                return httpx.get(url, timeout=2.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(
            ready, timeout, interval=0.1, message=lambda: f"{url} to return 200\n{self.logs()}"
        )

    def wait_registered(
        self, proc: ServiceProcess, worker_id: str, since: object, timeout: float = 30.0
    ) -> None:
        """Until a coordinator has recorded a heartbeat of the worker sent after `since` (a
        database timestamp): from then on it is offered work, and freezing it is a fault."""

        def heard() -> bool:
            self._check_alive(proc)
            with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT last_heartbeat_at > %s FROM workers WHERE id = %s", (since, worker_id)
                ).fetchone()
            return bool(row and row[0])

        wait_for(heard, timeout, message=lambda: f"{worker_id} to register\n{self.logs()}")

    def _database_now(self) -> object:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        return row[0]

    # -- teardown -------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> list[ServiceProcess]:
        """SIGTERM everything, give it `timeout` seconds in total, then SIGKILL the rest (their
        whole process groups). Returns the processes that had to be killed."""
        if self._client is not None:
            self._client.close()
            self._client = None
        procs = [p for p in self.processes() if p.is_running()]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        killed = [p for p in procs if p.is_running()]
        for proc in self.processes():
            proc.cleanup()
        return killed

    # -- internals ------------------------------------------------------------------------

    def _spawn(
        self, name: str, module: str, args: Sequence[str], env: Mapping[str, str | None]
    ) -> ServiceProcess:
        self._serial += 1
        stem = f"{self._serial:02d}-{name}"
        ready_file = self.log_dir / f"{stem}.ready"
        return ServiceProcess(
            name,
            [*self.launcher(module), *args, f"--ready-file={ready_file}"],
            self.log_dir / f"{stem}.log",
            env,
            self.cwd,
            ready_file=ready_file,
            echo=self.echo,
            inherit_env=self.inherit_env,
        ).start()

    @staticmethod
    def _check_alive(proc: ServiceProcess) -> None:
        if not proc.is_running():
            raise AssertionError(f"{proc.name} exited early\n{proc.describe()}")
