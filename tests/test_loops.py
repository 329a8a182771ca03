"""The loop helpers every service shares: the backoff between failed tries."""

from __future__ import annotations

import asyncio

from common.loops import Backoff


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    async def delays() -> list[float]:
        stop = asyncio.Event()
        stop.set()  # every wait returns at once; the delays are read, not slept
        backoff = Backoff(0.25, 1.5)
        seen = []
        for _ in range(5):
            seen.append(backoff.next_delay)
            assert await backoff.wait(stop) is True
        backoff.reset()
        seen.append(backoff.next_delay)
        return seen

    assert asyncio.run(delays()) == [0.25, 0.5, 1.0, 1.5, 1.5, 0.25]


def test_a_backoff_wait_ends_when_stop_is_set() -> None:
    async def interrupted() -> bool:
        stop = asyncio.Event()
        backoff = Backoff(1800.0, 3600.0)
        waiting = asyncio.create_task(backoff.wait(stop))
        # One turn of the loop runs the wait up to its sleep: it lengthens the next delay first.
        await asyncio.sleep(0)
        assert backoff.next_delay == 3600.0, "the wait never began"
        stop.set()
        return await asyncio.wait_for(waiting, timeout=30)

    assert asyncio.run(interrupted()) is True
