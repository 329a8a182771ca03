"""The reaper's shortcut: it reads all of /proc only when an ended attempt can have left
something, which it knows from the worker's own children. Real processes, real bash."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from devtools.cluster import wait_for
from worker_svc.reaper import own_children


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as file:
        text = file.read()
    return text[text.rfind(b")") + 2 :].split(b" ", 1)[0].decode()


def test_a_child_is_listed_while_it_runs_and_until_it_is_reaped() -> None:
    child = subprocess.Popen(["bash", "-c", "read -r _"], stdin=subprocess.PIPE)
    try:
        assert child.pid in (own_children() or set())
        assert child.stdin is not None
        child.stdin.close()  # bash ends, unreaped
        wait_for(lambda: state_of(child.pid) == "Z", timeout=10, message="a zombie")
        assert child.pid in (own_children() or set())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in (own_children() or set())


# Run in a process of its own, which becomes a subreaper as the worker does.
ESCAPE = textwrap.dedent(
    """
    import os, subprocess, sys
    from devtools.cluster import wait_for
    from worker_svc.reaper import Reaper, become_subreaper, own_children
    assert become_subreaper()
    reaper = Reaper()
    running = subprocess.Popen(["bash", "-c", "read -r _"], stdin=subprocess.PIPE)
    reaper.leaders.add(running.pid)
    assert reaper.nothing_left(), own_children()
    # A command whose child leaves its session and outlives it.
    command = "setsid sleep 60 >/dev/null 2>&1 & echo $!"
    ended = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE,
                             start_new_session=True)
    escaped = int(ended.stdout.readline())
    try:
        ended.wait()
        wait_for(lambda: escaped in own_children(), 10, 0.01, "the escapee to be adopted")
        assert not reaper.nothing_left(), "an adopted escapee must force the full sweep"
        assert reaper.sweep({ended.pid}) == 1
        def reaped() -> bool:
            reaper.reap()
            return reaper.nothing_left()

        wait_for(reaped, 10, 0.01, lambda: f"everything reaped; left: {own_children()}")
        assert not os.path.exists(f"/proc/{escaped}")
    finally:
        if os.path.exists(f"/proc/{escaped}"):
            os.kill(escaped, 9)
    running.stdin.close()
    running.wait()
    print("ok")
    """
)


def test_an_escaped_child_forces_the_sweep_and_once_killed_and_reaped_it_ends() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", ESCAPE], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# A leader spawned from another thread is listed under that thread, not the main one.
SPAWNER_THREAD = textwrap.dedent(
    """
    import os, subprocess, threading, time
    from worker_svc.reaper import Reaper, become_subreaper, own_children
    assert become_subreaper()
    reaper = Reaper()
    spawned = {}
    def spawn():
        spawned["proc"] = subprocess.Popen(["bash", "-c", "read -r _"], stdin=subprocess.PIPE)
        spawned["thread"] = threading.get_native_id()
    thread = threading.Thread(target=spawn)
    thread.start()
    thread.join()
    # join() returns before the kernel has ended the thread and moved its children: wait for that.
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/self/task/{spawned['thread']}") and time.monotonic() < deadline:
        time.sleep(0.001)
    child = spawned["proc"]
    try:
        # The thread has ended: its child now belongs to the main thread.
        assert child.pid in own_children(), own_children()
        assert not reaper.nothing_left(), "a child that leads no running command"
        reaper.leaders.add(child.pid)
        assert reaper.nothing_left()
    finally:
        child.stdin.close()
        child.wait()
    # While the spawning thread lives, only its own list holds the child.
    started, release = threading.Event(), threading.Event()
    def spawn_and_stay():
        spawned["proc"] = subprocess.Popen(["bash", "-c", "read -r _"], stdin=subprocess.PIPE)
        spawned["thread"] = threading.get_native_id()
        started.set()
        release.wait()
    thread = threading.Thread(target=spawn_and_stay)
    thread.start()
    started.wait()
    child = spawned["proc"]
    try:
        assert child.pid not in own_children([]), "not the main thread's child"
        assert child.pid in own_children([spawned["thread"]])
        assert child.pid in own_children()
        reaper.spawners.add(spawned["thread"])
        assert not reaper.nothing_left(), "the spawner's list is read"
    finally:
        child.stdin.close()
        child.wait()
        release.set()
        thread.join()
    print("ok")
    """
)


def test_the_shortcut_reads_the_main_thread_and_the_threads_that_spawned() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", SPAWNER_THREAD],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
