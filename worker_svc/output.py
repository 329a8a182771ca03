"""What a worker ships of an attempt's output file: the new bytes since the last delivery, of
which only the first `cap` bytes of the file (the head) and its last `cap` (the tail) are kept
(common/output.py). Reads through the file descriptor the worker opened when it created the
file, with positional reads, so the pump's writes are never disturbed. The command itself writes
into a pipe that the worker's pump copies into the file, up to the worker's
--output-file-max-bytes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Collection
from pathlib import Path

from proto import skiplock_pb2 as pb

# Seconds a command runs before the worker starts copying its output as it comes.
PUMP_DELAY = 0.05


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


class OutputPump:
    """Copies a command's output from its pipe into the attempt's output file, at most `limit`
    bytes of it (0: no limit); beyond that it reads on and discards, so the command never
    blocks for long, and notes the cut at the end of the file. Once finished, nothing the
    command left behind can write to the file any more.

    The event loop watches the pipe only once the command has run for `delay` seconds: a
    command that ends sooner (most do) has its output moved once, at its end, which spares
    the worker a wake-up per write and the watch's set-up. Meanwhile the pipe's buffer (64 KiB
    on Linux) holds the output; a command that fills it sooner waits until the delay is up."""

    def __init__(self, pipe_fd: int, file_fd: int, limit: int, delay: float = PUMP_DELAY) -> None:
        self.pipe_fd = pipe_fd
        self.file_fd = file_fd
        self.limit = limit
        self.written = 0
        self.dropped = 0
        # True once the pipe has been read to its end.
        self.drained = False
        # True while the event loop watches the pipe.
        self._watched = False
        os.set_blocking(pipe_fd, False)
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            delay, self._watch
        )

    def _watch(self) -> None:
        """The command still runs after the delay: copy its output as it comes from now on."""
        self._timer = None
        if not self.drained:
            asyncio.get_running_loop().add_reader(self.pipe_fd, self._pump)
            self._watched = True

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watched:
            self._watched = False
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.pipe_fd)

    def _pump(self) -> bool:
        """Move what the pipe holds now; False once it is empty or closed."""
        try:
            data = os.read(self.pipe_fd, 1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._unwatch()
            self.drained = True
            return False
        keep = len(data) if not self.limit else max(min(len(data), self.limit - self.written), 0)
        if keep:
            self._write(data[:keep] if keep < len(data) else data)
        self.written += keep
        self.dropped += len(data) - keep
        return True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.file_fd, view) :]

    def finish(self) -> str:
        """Move what is left in the pipe and close it; returns a note when output was cut."""
        while not self.drained and self._pump():
            pass
        self._unwatch()  # what the command left behind may still hold the pipe open
        note = ""
        if self.dropped:
            note = (
                f"output beyond {self.limit} bytes was not written to the output file "
                f"({self.dropped} bytes dropped; see --output-file-max-bytes)"
            )
            with contextlib.suppress(OSError):
                self._write(f"\n[skiplock: {note}]\n".encode())
        for fd in (self.pipe_fd, self.file_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        return note
