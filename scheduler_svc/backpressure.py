"""Backpressure: with --max-queued (all queues) or --max-queued-per-queue set, POST /schedule
and POST /tasks/batch answer 429 with Retry-After, writing nothing, when their tasks would take
the backlog of queued tasks beyond the limit.

The backlog is counted in the database at most every REFRESH_SECONDS and this scheduler adds
what it accepts meanwhile, so a burst through one scheduler cannot overshoot; several
schedulers together may overshoot by what the others accept within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from fastapi import HTTPException
from psycopg_pool import AsyncConnectionPool

from store import queues

REFRESH_SECONDS = 0.25
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class BacklogLimits:
    total: int | None = None  # queued tasks in all queues at most
    per_queue: int | None = None  # queued tasks in any one queue at most

    @property
    def enabled(self) -> bool:
        return self.total is not None or self.per_queue is not None


class Backlog:
    def __init__(self, pool: AsyncConnectionPool, limits: BacklogLimits) -> None:
        self._pool = pool
        self.limits = limits
        self._counted_at = float("-inf")
        self._queued: Counter[str] = Counter()
        self._lock = asyncio.Lock()

    async def admit(self, adding: Counter[str]) -> None:
        """Raise 429 when `adding` (queue -> new tasks) would exceed a limit."""
        if not self.limits.enabled:
            return
        async with self._lock:
            if time.monotonic() - self._counted_at > REFRESH_SECONDS:
                async with self._pool.connection() as conn:
                    self._queued = Counter(await queues.queued_by_queue(conn))
                self._counted_at = time.monotonic()
        problem = self._problem(adding)
        if problem:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            raise HTTPException(429, f"{problem}; retry later", headers=headers)

    def accepted(self, added: Counter[str]) -> None:
        """Count tasks this scheduler wrote until the next count includes them."""
        if self.limits.enabled:
            self._queued.update(added)

    def _problem(self, adding: Counter[str]) -> str:
        total = self.limits.total
        if total is not None and self._queued.total() + adding.total() > total:
            return f"the backlog is at {self._queued.total()} of {total} queued tasks"
        per_queue = self.limits.per_queue
        if per_queue is not None:
            for name, n in sorted(adding.items()):
                if self._queued[name] + n > per_queue:
                    return f"queue {name} is at {self._queued[name]} of {per_queue} queued tasks"
        return ""
