"""Background loops: small named coroutines sharing one stop event, run under a supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; return True when stop was set meanwhile."""
    if seconds <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def wait_any(events: list[asyncio.Event], seconds: float) -> None:
    """Return when any event is set or `seconds` pass, whichever comes first."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class Backoff:
    """Waits between failed tries of the same thing: `first` seconds, then twice as long after
    each failure up to `cap`; `reset` after a success starts over."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    @property
    def next_delay(self) -> float:
        return self._next

    def reset(self) -> None:
        self._next = self.first

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Sleep the current delay (cut short when `stop` is set) and lengthen the next one;
        returns whether stop is set."""
        delay, self._next = self._next, min(self._next * 2, self.cap)
        if stop is None:
            await asyncio.sleep(delay)
            return False
        return await sleep_or_stop(stop, delay)


class Pacer:
    """Spaces repeated work at least `interval` seconds apart: the first call after a quiet
    spell goes at once, and under load each call takes everything that piled up meanwhile, so
    the number of round trips stays bounded while the work per trip grows."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = float("-inf")

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last + self.interval - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = loop.time()


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set the stop event; the service then drains and exits 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


LoopFactory = Callable[[], Coroutine[Any, Any, None]]


async def supervise(stop: asyncio.Event, loops: dict[str, LoopFactory]) -> None:
    """Run the loops until stop is set. A loop that dies stops the whole service."""
    tasks: dict[asyncio.Task[None], str] = {
        asyncio.create_task(fn(), name=name): name for name, fn in loops.items()
    }
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finished_loops = [t for t in tasks if t in done]
    asked_to_stop = stop.is_set()
    stop.set()
    for task in finished_loops:
        exc = task.exception()
        if exc is not None or not asked_to_stop:
            raise RuntimeError(f"background loop {tasks[task]!r} stopped: {exc!r}") from exc
    await asyncio.gather(*tasks, return_exceptions=True)

