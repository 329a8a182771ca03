"""ProcessRunner with real bash: exit statuses, signals, timeouts, stops, the kill grace and
not_before. No services, no database."""

from __future__ import annotations

import asyncio
import grp
import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proto import skiplock_pb2 as pb
from tests.support.inprocess import eventually
from tests.support.pids import group_members, pid_alive
from worker_svc.process import Execution, Outcome, ProcessRunner, bash_in


def execution(
    tmp_path: Path,
    command: str,
    timeout: float | None = None,
    not_before: datetime | None = None,
    output_path: Path | None = None,
) -> Execution:
    return Execution(
        task_id="00000000-0000-0000-0000-000000000001",
        attempt=1,
        command=command,
        timeout=timeout,
        output_path=output_path or tmp_path / "out.log",
        not_before=not_before,
    )


async def run(runner: ProcessRunner, execution: Execution) -> tuple[Outcome, int]:
    """Run to the end; returns the outcome and how often `on_started` was called."""
    started: list[datetime | None] = []
    outcome = await runner.run(execution, lambda: started.append(execution.started_at))
    assert all(s is not None for s in started), "on_started before the start time was known"
    return outcome, len(started)


async def file_text(path: Path, timeout: float = 10.0) -> str:
    """Wait until `path` holds a complete line and return its text."""
    return await eventually(
        lambda: path.read_text() if path.exists() and path.read_text().endswith("\n") else "",
        timeout,
        f"a line in {path}",
    )


@pytest.mark.parametrize(
    ("command", "state", "code"),
    [
        ("exit 0", pb.ATTEMPT_STATE_SUCCEEDED, 0),
        ("exit 3", pb.ATTEMPT_STATE_FAILED, 3),
        ("kill -USR1 $$", pb.ATTEMPT_STATE_FAILED, 128 + 10),
        ("kill -KILL $$", pb.ATTEMPT_STATE_FAILED, 128 + 9),
    ],
)
def test_the_exit_status_decides_the_state_and_a_signal_is_128_plus_n(
    tmp_path, command, state, code
):
    outcome, starts = asyncio.run(run(ProcessRunner(5.0), execution(tmp_path, command)))
    assert (outcome.state, outcome.exit_code, starts) == (state, code, 1)


def test_stdout_and_stderr_go_to_the_output_file(tmp_path):
    work = execution(tmp_path, "echo out; echo err >&2")
    outcome, _ = asyncio.run(run(ProcessRunner(5.0), work))
    assert outcome.state == pb.ATTEMPT_STATE_SUCCEEDED
    assert work.output_path.read_text() == "out\nerr\n"
    assert work.started_at is not None and work.started_at <= outcome.finished_at


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    work = execution(tmp_path, f"sleep 100 & echo $$ $! > {pids}; sleep 100", timeout=1.5)

    async def scenario() -> Outcome:
        outcome, _ = await run(ProcessRunner(5.0), work)
        leader, child = (int(p) for p in (await file_text(pids)).split())
        await eventually(lambda: not pid_alive(child) and not group_members(leader), 10,
                         "the background child to be killed with its group")
        return outcome

    outcome = asyncio.run(scenario())
    assert (outcome.state, outcome.exit_code) == (pb.ATTEMPT_STATE_TIMED_OUT, 128 + 15)


def test_a_stop_sends_sigterm_first_so_the_command_may_clean_up(tmp_path):
    ready = tmp_path / "ready"
    work = execution(tmp_path, f"trap 'exit 7' TERM; echo up > {ready}; sleep 100 & wait")

    async def scenario() -> Outcome:
        running = asyncio.create_task(run(ProcessRunner(5.0), work))
        await file_text(ready)
        work.stop(pb.ATTEMPT_STATE_CANCELLED)
        outcome, _ = await running
        return outcome

    outcome = asyncio.run(scenario())
    assert (outcome.state, outcome.exit_code) == (pb.ATTEMPT_STATE_CANCELLED, 7)


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(tmp_path):
    ready = tmp_path / "ready"
    work = execution(tmp_path, f"trap '' TERM; echo up > {ready}; sleep 100")
    grace = 0.3

    async def scenario() -> tuple[Outcome, float]:
        loop = asyncio.get_running_loop()
        running = asyncio.create_task(run(ProcessRunner(grace), work))
        await file_text(ready)
        asked = loop.time()
        work.stop(pb.ATTEMPT_STATE_SHUTDOWN)
        outcome, _ = await running
        return outcome, loop.time() - asked

    outcome, took = asyncio.run(scenario())
    assert (outcome.state, outcome.exit_code) == (pb.ATTEMPT_STATE_SHUTDOWN, 128 + 9)
    assert took >= grace, "SIGKILL came before the grace had passed"


def test_the_first_stop_names_the_state(tmp_path):
    work = execution(tmp_path, "sleep 100")

    async def scenario() -> Outcome:
        running = asyncio.create_task(run(ProcessRunner(5.0), work))
        await eventually(lambda: work.started_at, message="the spawn")
        work.stop(pb.ATTEMPT_STATE_CANCELLED)
        work.stop(pb.ATTEMPT_STATE_SHUTDOWN)
        outcome, _ = await running
        return outcome

    outcome = asyncio.run(scenario())
    assert (outcome.state, outcome.exit_code) == (pb.ATTEMPT_STATE_CANCELLED, 128 + 15)


def test_never_starts_before_not_before(tmp_path):
    not_before = datetime.now(UTC) + timedelta(seconds=0.5)
    work = execution(tmp_path, "date +%s.%N", not_before=not_before)
    outcome, _ = asyncio.run(run(ProcessRunner(5.0), work))
    assert outcome.state == pb.ATTEMPT_STATE_SUCCEEDED
    assert work.started_at is not None and work.started_at >= not_before
    ran_at = datetime.fromtimestamp(float(work.output_path.read_text()), UTC)
    assert ran_at >= not_before


def test_a_stop_while_waiting_for_not_before_never_spawns(tmp_path):
    work = execution(tmp_path, "true", not_before=datetime.now(UTC) + timedelta(hours=1))

    async def scenario() -> tuple[Outcome, int]:
        running = asyncio.create_task(run(ProcessRunner(5.0), work))
        await asyncio.sleep(0)  # let it begin waiting
        work.stop(pb.ATTEMPT_STATE_CANCELLED)
        return await running

    outcome, starts = asyncio.run(scenario())
    assert (outcome.state, outcome.exit_code, starts) == (pb.ATTEMPT_STATE_CANCELLED, None, 0)
    assert work.started_at is None and not work.output_path.exists()


def test_an_output_file_that_cannot_be_created_is_a_spawn_failure(tmp_path):
    work = execution(tmp_path, "true", output_path=tmp_path / "missing" / "out.log")
    outcome, starts = asyncio.run(run(ProcessRunner(5.0), work))
    assert (outcome.state, outcome.exit_code, starts) == (pb.ATTEMPT_STATE_SPAWN_FAILED, None, 0)
    assert "could not create output file" in outcome.detail


def test_output_files_are_private_and_created_anew(tmp_path):
    work = execution(tmp_path, "echo private")
    outcome, _ = asyncio.run(run(ProcessRunner(5.0), work))
    assert outcome.state == pb.ATTEMPT_STATE_SUCCEEDED
    assert stat.S_IMODE(work.output_path.stat().st_mode) == 0o600
    # The same path again (a planted file, or the same attempt twice): never overwritten.
    outcome, starts = asyncio.run(run(ProcessRunner(5.0), execution(tmp_path, "echo again")))
    assert (outcome.state, starts) == (pb.ATTEMPT_STATE_SPAWN_FAILED, 0)
    assert "already exists" in outcome.detail
    assert work.output_path.read_text() == "private\n"


def test_a_symlink_at_the_output_path_is_never_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "out.log"
    link.symlink_to(target)
    outcome, starts = asyncio.run(run(ProcessRunner(5.0), execution(tmp_path, "echo overwrite")))
    assert (outcome.state, outcome.exit_code, starts) == (pb.ATTEMPT_STATE_SPAWN_FAILED, None, 0)
    assert "symbolic link there is never followed" in outcome.detail
    assert target.read_text() == "keep me\n" and link.is_symlink()


def test_output_files_may_belong_to_a_group(tmp_path):
    # root may give a file any group; anyone else, one of their own
    group = grp.getgrnam("daemon").gr_gid if os.geteuid() == 0 else os.getgid()
    work = execution(tmp_path, "echo shared")
    outcome, _ = asyncio.run(run(ProcessRunner(5.0, output_group=group), work))
    assert outcome.state == pb.ATTEMPT_STATE_SUCCEEDED
    info = work.output_path.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, group)


def test_output_beyond_the_file_limit_is_dropped_and_noted(tmp_path):
    work = execution(tmp_path, "head -c 100000 /dev/zero; echo done >&2")
    outcome, _ = asyncio.run(run(ProcessRunner(5.0, output_file_limit=1000), work))
    # The command was neither blocked nor killed: it wrote everything and exited 0.
    assert (outcome.state, outcome.exit_code) == (pb.ATTEMPT_STATE_SUCCEEDED, 0)
    assert "99005 bytes dropped" in outcome.detail
    data = work.output_path.read_bytes()
    assert data[:1000] == b"\0" * 1000
    assert data[1000:].decode().strip().startswith("[skiplock: output beyond 1000 bytes")



def test_bash_is_looked_up_once_per_path_and_never_through_a_relative_entry(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    (bin_dir / "bash").symlink_to(bash)
    search_path = f"{bin_dir}:/usr/bin:/bin"
    bash_in.cache_clear()
    assert bash_in(search_path) == str(bin_dir / "bash")
    # A relative entry is resolved in the command's working directory: left to the exec.
    assert bash_in(f"bin:{search_path}") == "bash"
    assert bash_in(str(tmp_path / "nowhere")) == "bash"


def test_a_bash_that_moved_since_it_was_found_is_searched_again(tmp_path):
    """The lookup is cached per PATH; a stale answer costs one failed spawn, never the task."""
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second):
        directory.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    (first / "bash").symlink_to(bash)
    (second / "bash").symlink_to(bash)
    bash_in.cache_clear()
    env = {"PATH": f"{first}:{second}", "LANG": "C.UTF-8"}
    work = execution(tmp_path, 'echo "$BASH"')
    work.env = env
    outcome, _ = asyncio.run(run(ProcessRunner(5.0), work))
    assert outcome.state == pb.ATTEMPT_STATE_SUCCEEDED
    assert work.output_path.read_text() == f"{first / 'bash'}\n"
    (first / "bash").unlink()
    again = execution(tmp_path, 'echo "$BASH"', output_path=tmp_path / "again.log")
    again.env = env
    outcome, _ = asyncio.run(run(ProcessRunner(5.0), again))
    assert outcome.state == pb.ATTEMPT_STATE_SUCCEEDED
    assert again.output_path.read_text() == f"{second / 'bash'}\n"


def test_a_stop_after_the_start_ends_the_wait_at_once_and_leaves_no_hook(tmp_path):
    async def scenario() -> tuple[Outcome, Execution]:
        work = execution(tmp_path, "sleep 30")
        runner = ProcessRunner(5.0)
        running = asyncio.create_task(runner.run(work, lambda: None))
        await eventually(lambda: work.on_stop is not None, 10, "the runner to wait")
        work.stop(pb.ATTEMPT_STATE_CANCELLED)
        outcome = await asyncio.wait_for(running, 10)
        return outcome, work

    outcome, work = asyncio.run(scenario())
    assert (outcome.state, outcome.exit_code) == (pb.ATTEMPT_STATE_CANCELLED, 128 + 15)
    assert work.on_stop is None


def test_a_running_commands_output_reaches_its_file_while_it_runs(tmp_path):
    async def scenario() -> Outcome:
        work = execution(tmp_path, "echo early; sleep 30")
        running = asyncio.create_task(ProcessRunner(5.0).run(work, lambda: None))
        assert await file_text(work.output_path) == "early\n"
        assert not running.done()
        work.stop(pb.ATTEMPT_STATE_CANCELLED)
        return await asyncio.wait_for(running, 10)

    assert asyncio.run(scenario()).state == pb.ATTEMPT_STATE_CANCELLED


def test_output_larger_than_the_pipe_is_copied_whole(tmp_path):
    # More than the pipe holds before the worker watches it: the command waits, then goes on.
    work = execution(tmp_path, "head -c 1000000 /dev/zero; echo done")
    outcome, _ = asyncio.run(run(ProcessRunner(5.0), work))
    assert (outcome.state, outcome.detail) == (pb.ATTEMPT_STATE_SUCCEEDED, "")
    assert work.output_path.read_bytes() == b"\0" * 1000000 + b"done\n"
