"""Serving long-lived request streams (ReportStream, SubmitStream) next to unary calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


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
