"""Nothing a command starts outlives its attempt.

A command runs as the leader of its own session and process group, so a signal to the group
reaches every child that stayed in it. A child that left (`setsid`, `setpgid`, a double fork)
is found another way: the worker is a child subreaper (prctl PR_SET_CHILD_SUBREAPER, set in
`worker_svc.__main__`), so such a child, once its parents are gone, becomes the worker's own
child instead of init's, and it still carries the attempt's SKIPLOCK_TASK_ID and
SKIPLOCK_ATTEMPT in its initial environment (/proc/PID/environ). When an attempt ends, however
it ends, the sweep kills its group, its session, the worker's adopted children marked with the
attempt (and those that carry no attempt at all: only a command that cleared its environment
leaves those), and every descendant of all of them; then it reaps what it adopted.

A sweep reads /proc (about a millisecond with a hundred processes), once for all the attempts
that ended since the last one, and only when something can be left: in a subreaper, every
process an ended attempt left has a chain of live parents ending in a child of the worker
that no running command leads (a process's parent is always a live ancestor, an orphan's its
nearest subreaper ancestor, and the ended leader is reaped already). Children stay listed in
/proc/self/task/*/children until the worker reaps them, and only the sweep reaps adopted
ones, so when that list holds nothing but the leaders of running commands, nothing is left.
Only two kinds of thread can hold such a child: the threads that spawned commands (a child is
listed under the thread that forked it, and leaders are all the worker forks) and the main
thread (an orphan joins the subreaper's first live thread, the main one, and so do the
children of a thread that ends). So the check reads those threads' lists alone, one small file
in a worker that spawns from its main thread, not one per thread of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
# Rounds of stop-and-look before the kill: a process forking as it is found is caught in the
# next round, since a stopped process forks no more.
MAX_ROUNDS = 5


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants; False where not supported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
            return False
        return flag.value != 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class Proc:
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int


def read_proc(pid: int) -> Proc | None:
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 1024)
    except OSError:
        return None
    finally:
        os.close(fd)
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = text[text.rfind(b")") + 2 :].split(b" ", 4)
    if len(fields) < 4:
        return None
    return Proc(pid, fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))


def processes() -> dict[int, Proc]:
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = read_proc(int(entry.name))
            if proc is not None:
                found[proc.pid] = proc
    return found


def own_children(threads: Iterable[int] | None = None) -> set[int] | None:
    """This process's children, running or not yet reaped, forked by the given threads (native
    ids) or adopted; None (all threads) reads every thread's list. None where the kernel keeps
    no list. Orphans join the first live thread (the main one), so it is read last: a child
    moved there from an ending thread during the reading is still seen."""
    me = os.getpid()
    if threads is None:
        try:
            names = os.listdir(f"/proc/{me}/task")
        except OSError:
            return None
    else:
        names = [str(tid) for tid in threads if tid != me] + [str(me)]
    found: set[int] = set()
    for tid in sorted(names, key=lambda tid: tid == str(me)):
        try:
            fd = os.open(f"/proc/{me}/task/{tid}/children", os.O_RDONLY)
        except FileNotFoundError:
            if tid == str(me):
                return None
            continue  # a thread that has ended
        except OSError:
            return None
        try:
            text = b""
            while chunk := os.read(fd, 65536):
                text += chunk
        except OSError:
            return None
        finally:
            os.close(fd)
        found.update(int(pid) for pid in text.split())
    return found


def attempt_mark(pid: int) -> tuple[str, str] | None:
    """The (task id, attempt) a process was started with; None when it carries none."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            environ = file.read()
    except OSError:
        return None
    values = {}
    for item in environ.split(b"\0"):
        name, _, value = item.partition(b"=")
        if name in (b"SKIPLOCK_TASK_ID", b"SKIPLOCK_ATTEMPT"):
            values[name] = value.decode(errors="replace")
    if len(values) < 2:
        return None
    return values[b"SKIPLOCK_TASK_ID"], values[b"SKIPLOCK_ATTEMPT"]


def descendants(roots: Iterable[int], procs: dict[int, Proc]) -> set[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for proc in procs.values():
        children[proc.ppid].append(proc.pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children[pid])
    return found


class Reaper:
    """Finds and kills what ended attempts left behind, and reaps the worker's adopted
    children. `leaders` are the commands' own processes, which their runner reaps; whoever
    spawns one adds its own thread's native id to `spawners`.

    A sweep reads /proc once for every attempt that ended since the last one: at once when the
    worker is quiet, at most every SWEEP_INTERVAL under load, so its cost stays bounded however
    many commands end per second; and not at all when the worker's own children show that
    nothing can be left (`nothing_left`)."""

    SWEEP_INTERVAL = 0.05

    def __init__(self, adopting: bool | None = None) -> None:
        # Orphans come to this process only when it is a subreaper (or init).
        self.adopting = (is_subreaper() or os.getpid() == 1) if adopting is None else adopting
        # Only then does every leftover have a chain of parents ending in an own child.
        self.chains_end_here = self.adopting and (is_subreaper() or os.getpid() == 1)
        self.leaders: set[int] = set()
        # Native ids of the threads that spawned leaders (their children are listed there).
        self.spawners: set[int] = set()
        # Attempts still running here, as their marks: their adopted children are left alone.
        self.running: set[tuple[str, str]] = set()
        # Leaders of attempts that ended since the last sweep.
        self.ended: set[int] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_sweep = 0.0

    def attempt_ended(self, leader: int) -> None:
        """The attempt led by `leader` (reaped already) has ended: sweep for what it left."""
        self.ended.add(leader)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._last_sweep + self.SWEEP_INTERVAL - loop.time())
            self._timer = loop.call_later(delay, self._sweep_ended)

    def _sweep_ended(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        self._last_sweep = loop.time()
        ended, self.ended = self.ended, set()
        if self.sweep(ended) and self._timer is None:
            # Collect what was just killed once it has died.
            self._timer = loop.call_later(self.SWEEP_INTERVAL, self._sweep_ended)

    def flush(self) -> int:
        """Sweep now for every attempt that has ended, as the worker shuts down: its adopted
        orphans would otherwise pass to init and outlive it. Returns how many it killed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ended, self.ended = self.ended, set()
        return self.sweep(ended)

    def leftovers(self, ended: set[int], procs: dict[int, Proc]) -> set[int]:
        """Every live process of the ended attempts: in their groups or sessions, adopted and
        marked with an attempt no longer running (or with none), and their descendants."""
        me = os.getpid()
        roots = {
            p.pid
            for p in procs.values()
            if (p.pgrp in ended or p.session in ended) and p.pid != me
        }
        if self.adopting:
            for p in procs.values():
                if p.ppid != me or p.pid in self.leaders or p.state in ("Z", "X"):
                    continue
                if attempt_mark(p.pid) not in self.running:
                    roots.add(p.pid)
        return {pid for pid in descendants(roots, procs) if procs[pid].state not in ("Z", "X")}

    def sweep(self, ended: set[int]) -> int:
        """Stop, then kill, what is left of the ended attempts; reap adopted children that
        have died. Returns how many processes it killed."""
        if self.nothing_left():
            return 0
        stopped: set[int] = set()
        for _ in range(MAX_ROUNDS):
            procs = processes()
            if not stopped:
                self._reap(procs)
            found = self.leftovers(ended, procs) - stopped
            if not found:
                break
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGSTOP)
            stopped |= found
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if stopped:
            log.info("killed %d process(es) left behind by ended attempts", len(stopped))
        return len(stopped)

    def reap(self) -> None:
        """Collect the exit status of every adopted child that has ended."""
        if self.adopting and not self.nothing_left():
            self._reap(processes())

    def nothing_left(self) -> bool:
        """True when no process of an ended attempt and no unreaped adopted child can exist:
        the worker's only children lead running commands (see the module's docstring)."""
        if not self.chains_end_here:
            return False
        children = own_children(self.spawners)
        return children is not None and children <= self.leaders

    def _reap(self, procs: dict[int, Proc]) -> None:
        """Never a leader's exit status: its runner waits for that one."""
        if not self.adopting:
            return
        me = os.getpid()
        for proc in procs.values():
            if proc.ppid == me and proc.state in ("Z", "X") and proc.pid not in self.leaders:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(proc.pid, os.WNOHANG)
