"""Running one command: `bash -c` in its own process group, output to a file, stoppable."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common.loops import wait_any
from proto import skiplock_pb2 as pb
from worker_svc.output import OutputFile, OutputPump
from worker_svc.reaper import Reaper


@dataclass(frozen=True)
class Outcome:
    state: pb.AttemptState.ValueType
    # None when the command never ran.
    exit_code: int | None
    finished_at: datetime
    detail: str = ""


@dataclass
class Execution:
    """One attempt on this worker, from acceptance to its final report."""

    task_id: str
    attempt: int
    command: str
    # Seconds from the spawn; None means no limit.
    timeout: float | None
    output_path: Path
    # Never spawned before this instant (the worker's clock).
    not_before: datetime | None
    # Bytes of output shipped to the database at each end of the file; 0 ships none.
    output_cap: int = 0
    # The command's whole environment (worker_svc/environment.py); nothing else is inherited.
    env: dict[str, str] = field(default_factory=dict)
    # Absolute working directory; None: the worker's own.
    cwd: str | None = None
    # Exit statuses reported as success.
    success_exit_codes: frozenset[int] = frozenset({0})
    # Hard rlimits of the command and everything it starts; None: the worker's own.
    limits: Limits | None = None
    started_at: datetime | None = None
    # The output file as far as shipped, once spawned (None when output_cap is 0).
    output: OutputFile | None = None
    # Set when skiplock stopped the command; decides the state it is reported with.
    stopped_as: pb.AttemptState.ValueType | None = None
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # Called on a stop request while the runner waits for the command's exit.
    on_stop: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt)

    def stop(self, state: pb.AttemptState.ValueType) -> None:
        """Ask the runner to stop the command (the first request names the state)."""
        if self.stopped_as is None:
            self.stopped_as = state
        self.stop_requested.set()
        if self.on_stop is not None:
            self.on_stop()


class OutputFileExists(OSError):
    """Something is already at an attempt's output path: it is neither overwritten nor, when it
    is a symbolic link, followed."""


def create_output(path: Path, group: int | None = None) -> int:
    """Create an attempt's output file, exclusively and without following a symbolic link:
    mode 0600, or 0640 owned by `group`. Returns a descriptor open for reading and writing."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise OutputFileExists(f"output file {path} already exists: not overwritten") from None
    try:
        if group is not None:
            os.fchown(fd, -1, group)
        os.fchmod(fd, 0o600 if group is None else 0o640)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class RunAs:
    """The user commands run as, when the worker runs as root and is told another."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = None

    def ulimit_script(self) -> str:
        """bash that sets these as hard and soft limits, then runs the command ($1) as `bash -c`
        would: the limits bind every process it starts, and none of them can raise one."""
        settings = [
            f"ulimit -{flag} {value}"
            for flag, value in (
                ("v", None if self.memory_bytes is None else self.memory_bytes // 1024),
                ("t", self.cpu_seconds),
                ("n", self.open_files),
            )
            if value is not None
        ]
        return " && ".join(settings) + ' || exit 126; exec bash -c "$1"'


@functools.cache
def devnull() -> int:
    """One descriptor of /dev/null for every command's stdin (close-on-exec: the child gets
    its own copy as fd 0), instead of an open and a close per spawn."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


@functools.lru_cache(maxsize=16)
def bash_in(search_path: str) -> str:
    """Where `bash` is on `search_path` (a PATH value), as the exec would find it; "bash" (the
    lookup left to each spawn) when it is not there or the PATH has a relative entry, which
    only the command's working directory resolves. Saves each spawn the search: joining every
    entry and, in the child, a failed exec per entry before bash's."""
    if any(not os.path.isabs(entry) for entry in search_path.split(os.pathsep)):
        return "bash"
    found = shutil.which("bash", path=search_path)
    return found if found is not None and os.path.isabs(found) else "bash"


def spawn(
    command: str,
    output_fd: int,
    env: dict[str, str],
    cwd: str | None = None,
    limits: Limits | None = None,
    run_as: RunAs | None = None,
) -> subprocess.Popen[bytes]:
    """Start `bash -c command` as the leader of a new session and process group, its stdout
    and stderr both `output_fd` (the pipe the worker pumps into the output file)."""
    argv = ["bash", "-c", command]
    if limits is not None:
        argv = ["bash", "-c", limits.ulimit_script(), "bash", command]
    search_path = env.get("PATH", os.defpath)
    # Another user's exec may be refused a bash this worker may run: that user's exec searches.
    executable = bash_in(search_path) if run_as is None else "bash"
    try:
        return _popen(argv, executable, output_fd, env, cwd, run_as)
    except FileNotFoundError:
        if executable == "bash":
            raise
        bash_in.cache_clear()  # bash moved since it was found: search again
        return _popen(argv, bash_in(search_path), output_fd, env, cwd, run_as)


def _popen(
    argv: list[str],
    executable: str,
    output_fd: int,
    env: dict[str, str],
    cwd: str | None,
    run_as: RunAs | None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        executable=executable,
        stdin=devnull(),
        stdout=output_fd,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        env=env,
        cwd=cwd,
        user=None if run_as is None else run_as.uid,
        group=None if run_as is None else run_as.gid,
        extra_groups=None if run_as is None else list(run_as.groups),
    )


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_code_of(returncode: int) -> int:
    """Shell convention: 128+N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def exit_future(proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """Resolves with the return code once the process has ended and been reaped. The event loop
    watches a pidfd (Linux 5.3+), so no thread waits per process; elsewhere a thread does."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return asyncio.ensure_future(asyncio.to_thread(proc.wait))
    future: asyncio.Future[int] = loop.create_future()

    def on_exit() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not future.done():
            future.set_result(proc.wait())

    loop.add_reader(fd, on_exit)
    return future


class ProcessRunner:
    """Runs an execution from start to end: waits for its `not_before`, spawns, enforces the
    timeout and stop requests (SIGTERM to the group, SIGKILL after the grace) and reaps.

    Spawns on the event loop's thread and waits through pidfds: measured here, that costs the
    worker a third of the CPU per command that a thread pool's GIL hand-offs do."""

    def __init__(
        self,
        kill_grace: float,
        reaper: Reaper | None = None,
        output_group: int | None = None,
        output_file_limit: int = 0,
        run_as: RunAs | None = None,
    ) -> None:
        self.kill_grace = kill_grace
        self.reaper = reaper or Reaper()
        # Group owning the output files (mode 0640); None keeps them 0600.
        self.output_group = output_group
        # Bytes of output written to each output file at most; 0: no limit.
        self.output_file_limit = output_file_limit
        # The user commands run as; None: the worker's own.
        self.run_as = run_as

    async def run(self, execution: Execution, on_started: Callable[[], None]) -> Outcome:
        """Run the command to its end; `on_started` is called once it has been spawned."""
        await self._wait_until(execution.not_before, execution.stop_requested)
        if execution.stopped_as is not None:
            return Outcome(execution.stopped_as, None, datetime.now(UTC), "stopped before start")
        if execution.cwd is not None and not os.path.isdir(execution.cwd):
            detail = f"working directory {execution.cwd} does not exist on this worker"
            return Outcome(pb.ATTEMPT_STATE_SPAWN_FAILED, None, datetime.now(UTC), detail)
        try:
            fd = create_output(execution.output_path, self.output_group)
        except OutputFileExists as exc:
            detail = f"{exc} (a symbolic link there is never followed)"
            return Outcome(pb.ATTEMPT_STATE_SPAWN_FAILED, None, datetime.now(UTC), detail)
        except OSError as exc:
            detail = f"could not create output file {execution.output_path}: {exc.strerror}"
            return Outcome(pb.ATTEMPT_STATE_SPAWN_FAILED, None, datetime.now(UTC), detail)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            proc = spawn(
                execution.command,
                write_end,
                execution.env,
                execution.cwd,
                execution.limits,
                self.run_as,
            )
        except OSError as exc:
            for unused in (fd, read_end):
                os.close(unused)
            detail = f"could not start bash: {exc}"
            return Outcome(pb.ATTEMPT_STATE_SPAWN_FAILED, None, datetime.now(UTC), detail)
        finally:
            os.close(write_end)
        pump = OutputPump(read_end, os.dup(fd), self.output_file_limit)
        execution.started_at = datetime.now(UTC)
        mark = (execution.task_id, str(execution.attempt))
        self.reaper.leaders.add(proc.pid)
        self.reaper.spawners.add(threading.get_native_id())
        self.reaper.running.add(mark)
        if execution.output_cap > 0:
            execution.output = OutputFile(fd, execution.output_cap)
        else:
            os.close(fd)
        exited = exit_future(proc)
        on_started()
        await self._exit_stop_or_timeout(execution, exited)
        if not exited.done():
            execution.stop(pb.ATTEMPT_STATE_TIMED_OUT)  # no-op when asked to stop
            await self._terminate(proc.pid, exited)
        returncode = await exited
        self.reaper.leaders.discard(proc.pid)
        self.reaper.running.discard(mark)
        # Nothing the command started outlives its attempt, whether or not it left the group.
        signal_group(proc.pid, signal.SIGKILL)
        self.reaper.attempt_ended(proc.pid)
        # Whatever is still running from the attempt can no longer write to its file.
        cut = pump.finish()
        finished = datetime.now(UTC)
        code = exit_code_of(returncode)
        if execution.stopped_as is not None:
            state = execution.stopped_as
        else:
            succeeded = code in execution.success_exit_codes
            state = pb.ATTEMPT_STATE_SUCCEEDED if succeeded else pb.ATTEMPT_STATE_FAILED
        return Outcome(state, code, finished, cut)

    @staticmethod
    async def _exit_stop_or_timeout(execution: Execution, exited: asyncio.Future[int]) -> None:
        """Return once the command has exited, a stop is requested or the timeout has passed:
        one future that any of the three wakes, not a task per attempt watching for a stop."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake(*_: object) -> None:
            if not woken.done():
                woken.set_result(None)

        exited.add_done_callback(wake)
        execution.on_stop = wake
        timer = None if execution.timeout is None else loop.call_later(execution.timeout, wake)
        if execution.stop_requested.is_set():
            wake()
        try:
            await woken
        finally:
            execution.on_stop = None
            exited.remove_done_callback(wake)
            if timer is not None:
                timer.cancel()

    async def _terminate(self, pgid: int, exited: asyncio.Future[int]) -> None:
        """SIGTERM to the process group, SIGKILL once the grace period has passed."""
        signal_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout=self.kill_grace)
        except TimeoutError:
            signal_group(pgid, signal.SIGKILL)

    @staticmethod
    async def _wait_until(moment: datetime | None, stop: asyncio.Event) -> None:
        """Guards against a coordinator whose clock runs ahead of ours: never start early."""
        while moment is not None and not stop.is_set():
            wait = (moment - datetime.now(UTC)).total_seconds()
            if wait <= 0:
                return
            await wait_any([stop], wait)
