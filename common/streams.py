"""Long-lived request streams (ReportStream, SubmitStream) next to unary calls: serving them,
and calling peers of an older version, which have only the unary calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

# How long a peer that has no stream gets unary calls before its stream is tried again: one
# upgraded in place is back on its stream within this, at the price of one refused stream
# opening per this interval for a peer that stays on the older version.
STREAM_RETRY_AFTER = 60.0


class StreamEnds:
    """Ends a server's idle streams when it stops. A caller keeps its stream open between
    messages, so without this the server's shutdown grace would be spent waiting for callers
    that never hang up. A stream busy with a request answers it first and ends after."""

    def __init__(self) -> None:
        self.stopping = False
        # Handler tasks waiting for their caller's next request.
        self._idle: set[asyncio.Task[object]] = set()

    def requests(self, iterator: AsyncIterator[T]) -> AsyncIterator[T]:
        """The stream's requests until the caller ends it or the server stops."""
        return self._requests(iterator)

    async def _requests(self, iterator: AsyncIterator[T]) -> AsyncIterator[T]:
        task = asyncio.current_task()
        assert task is not None
        while not self.stopping:
            self._idle.add(task)
            try:
                request = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if self.stopping:
                    return  # the stream ends with OK; the caller opens another
                raise
            finally:
                self._idle.discard(task)
            yield request

    def stop(self) -> None:
        self.stopping = True
        for task in self._idle:
            task.cancel()


class UnaryFallback(Generic[K]):
    """Peers whose stream was refused as UNIMPLEMENTED (an older version): each is called by
    its unary method for `retry_after` seconds, then its stream is tried again."""

    def __init__(self, retry_after: float = STREAM_RETRY_AFTER) -> None:
        self.retry_after = retry_after
        self._until: dict[K, float] = {}

    def remember(self, peer: K) -> None:
        self._until[peer] = time.monotonic() + self.retry_after

    def unary(self, peer: K) -> bool:
        """Whether to call `peer` by its unary method now."""
        until = self._until.get(peer)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._until[peer]
        return False
