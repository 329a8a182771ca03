"""Running one command: `bash -c` in its own process group, output to a file, stoppable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt)

    def stop(self, state: pb.AttemptState.ValueType) -> None:
        """Ask the runner to stop the command (the first request names the state)."""
        if self.stopped_as is None:
            self.stopped_as = state
        self.stop_requested.set()


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
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
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
        self.reaper.running.add(mark)
        if execution.output_cap > 0:
            execution.output = OutputFile(fd, execution.output_cap)
        else:
            os.close(fd)
        exited = exit_future(proc)
        on_started()
        stopping = asyncio.ensure_future(execution.stop_requested.wait())
        waiting: list[asyncio.Future[Any]] = [exited, stopping]
        try:
            await asyncio.wait(waiting, timeout=execution.timeout, return_when=FIRST_COMPLETED)
        finally:
            stopping.cancel()
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
