"""A command that records how many copies of itself run at once, for tests of limits."""

from __future__ import annotations

from pathlib import Path


class OverlapProbe:
    """Each run of `command` marks itself running, waits `hold` seconds, appends how many runs
    are marked at that moment to a file, and unmarks itself."""

    def __init__(self, directory: Path, hold: float = 0.3) -> None:
        self.running = directory / "running"
        self.running.mkdir()
        self.counts = directory / "counts"
        self.command = (
            f"touch {self.running}/$SKIPLOCK_TASK_ID; sleep {hold}; "
            f"ls {self.running} | wc -l >> {self.counts}; rm {self.running}/$SKIPLOCK_TASK_ID"
        )

    def seen(self) -> list[int]:
        """How many ran at once, one figure per finished run."""
        return [int(line) for line in self.counts.read_text().split()]
