"""What a worker ships of an attempt's output file: the new bytes since the last delivery, of
which only the first `cap` bytes of the file (the head) and its last `cap` (the tail) are kept
(common/output.py). Reads through the file descriptor the worker opened when it created the
file, with positional reads, so the command's own writes are never disturbed."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection
from pathlib import Path

from proto import skiplock_pb2 as pb


class OutputFile:
    """An attempt's output file as far as it has been shipped."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        # Bytes a coordinator has acknowledged: every delta starts here.
        self.shipped = 0

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def grown(self) -> bool:
        return self.size() > self.shipped

    def delta(self, ref: pb.AttemptRef, worker_id: str) -> pb.OutputDelta | None:
        """What is new since the last acknowledged delta; None when nothing is."""
        size = self.size()
        start = self.shipped
        if size <= start:
            return None
        head = os.pread(self.fd, min(size, self.cap) - start, start) if start < self.cap else b""
        if len(head) < min(size, self.cap) - start:  # the file shrank under us
            size = start + len(head)
        tail_offset = max(start, self.cap, size - self.cap)
        tail = os.pread(self.fd, size - tail_offset, tail_offset) if size > tail_offset else b""
        if not head and not tail:
            return None
        return pb.OutputDelta(
            ref=ref,
            worker_id=worker_id,
            head_offset=start,
            head=head,
            tail_offset=tail_offset,
            tail=tail,
            size=tail_offset + len(tail) if tail else start + len(head),
            cap=self.cap,
        )

    def acknowledge(self, delta: pb.OutputDelta) -> None:
        self.shipped = max(self.shipped, delta.size)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def prune_output_files(directory: Path, max_age: float, keep: Collection[Path] = ()) -> int:
    """Delete the output files in `directory` last written more than `max_age` seconds ago,
    except those in `keep` (attempts this worker still holds); returns how many went."""
    cutoff = time.time() - max_age
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            path = Path(entry.path)
            if path in keep:
                continue
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile
                old = entry.stat(follow_symlinks=False).st_mtime < cutoff
                if old and entry.is_file(follow_symlinks=False):
                    path.unlink()
                    removed += 1
    return removed
