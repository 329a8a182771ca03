"""Progress of long benchmark runs, shown on a terminal only.

Everything here draws on stderr, and only when stderr is a terminal: piped or captured output,
and the figures a benchmark prints, stay exactly as they were. Bars disappear when done.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def on_terminal() -> bool:
    # isatty itself: rich would also draw where FORCE_COLOR or TTY_COMPATIBLE say so.
    return sys.stderr.isatty()


def terminal_progress() -> Progress:
    """rich's Progress, drawing on stderr when it is a terminal and doing nothing otherwise."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not on_terminal(),
        transient=True,
        # Lines printed meanwhile go above the bars, but stdout only when it is the terminal
        # too: redirected elsewhere (a file, a pipe), the figures must land there unchanged.
        redirect_stdout=sys.stdout.isatty(),
        # Redrawn in a thread of its own; a few times a second is plenty and costs next to no
        # CPU on a machine the benchmark shares with what it measures.
        refresh_per_second=4,
    )


def phase(line: str) -> None:
    """One line saying what a long run is doing now (on a terminal only)."""
    if on_terminal():
        print(line, file=sys.stderr, flush=True)


@contextmanager
def watched(
    description: str, total: float, measure: Callable[[], float], interval: float = 0.5
) -> Iterator[None]:
    """While the block runs, a bar of `measure()` out of `total`, measured again every
    `interval` seconds in a thread of its own (on a terminal only)."""
    with terminal_progress() as bars:
        if bars.disable:
            yield
            return
        bar = bars.add_task(description, total=total)
        done = threading.Event()

        def follow() -> None:
            while not done.wait(interval):
                bars.update(bar, completed=min(measure(), total))

        follower = threading.Thread(target=follow, name="progress", daemon=True)
        follower.start()
        try:
            yield
        finally:
            done.set()
            follower.join()
