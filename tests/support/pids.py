"""The processes a command left behind, watched by pid from /proc."""

from __future__ import annotations

import os
from pathlib import Path

from devtools.cluster import wait_for


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after its ')'.
    return text.rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a zombie has run its last instruction)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(entry))
    return members


def read_pids(path: Path, count: int, timeout: float = 20.0) -> list[int]:
    """Wait until `path` holds at least `count` pids (one a line) and return them."""

    def pids() -> list[int]:
        try:
            lines = path.read_text().split()
        except FileNotFoundError:
            return []
        values = [int(v) for v in lines if v.isdigit()]
        return values if len(values) >= count else []

    return wait_for(pids, timeout, message=f"{count} pids in {path}")
