"""Recovering the work of lost workers: any coordinator may do it, each attempt is ended once."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from common.logs import get_logger
from common.loops import sleep_or_stop
from common.metrics import DATABASE_ERRORS
from coordinator_svc.config import CoordinatorConfig
from coordinator_svc.endings import record_endings
from coordinator_svc.metrics import WORKERS_LOST
from coordinator_svc.wakeups import Wakeups
from store import dispatch
from store.db import DB_ERRORS, in_transaction
from store.models import AttemptEnd, AttemptKey
from store.vocabulary import AttemptStatus, EndReason

log = get_logger(__name__)

# How often to look for silent workers; with lost_after = 3 s a dead worker's attempts are
# ended within lost_after + this interval of its last heartbeat (see docs/RELIABILITY.md).
REAP_INTERVAL = 0.25
# A pass that declares workers lost ends their open attempts at once. Other passes look for open
# attempts of lost workers only every this many (once a second): such attempts are left only
# when the coordinator that declared their worker lost died before ending them, or when a claim
# gave the worker an attempt just as it was declared lost. An idle pass is then one statement.
SWEEP_EVERY = 4
# Open attempts ended per pass.
SWEEP_BATCH = 500


async def reap_once(
    pool: AsyncConnectionPool,
    config: CoordinatorConfig,
    wakeups: Wakeups,
    hearing: Hearing | None = None,
    sweep: bool = True,
) -> int:
    """Declare silent workers lost (unless `hearing` says silence cannot be judged yet) and end
    the open attempts of the workers it declared lost, or of all lost workers when `sweep`.
    Returns how many attempts it ended."""

    async def find(conn: psycopg.AsyncConnection[Any]) -> list[AttemptKey]:
        lost: list[str] = []
        if hearing is None or hearing.contact(asyncio.get_running_loop().time()):
            lost = await dispatch.declare_lost_workers(conn, config.lost_after)
            if lost:
                WORKERS_LOST.inc(len(lost))
                log.warning(
                    "workers declared lost (no heartbeat); their attempts end as worker_lost",
                    worker_ids=lost,
                    silent_for_seconds=config.lost_after,
                )
        if not (lost or sweep):
            return []
        return await dispatch.open_attempts_of_lost_workers(conn, SWEEP_BATCH)

    # Each statement commits on its own: a worker declared lost stays lost, and its attempts
    # are found by this pass's query or by any later sweep.
    keys = await in_transaction(pool, find, atomic=False)
    if keys:
        await record_endings(
            pool,
            [
                AttemptEnd(k.task_id, k.attempt, AttemptStatus.FAILED, EndReason.WORKER_LOST)
                for k in keys
            ],
        )
        wakeups.dispatch.set()
    return len(keys)


class Hearing:
    """Whether this coordinator has been in touch with the database long enough to take a
    worker's silence for its death.

    While the database is unreachable, or this process is frozen (SIGSTOP, a stalled event
    loop), heartbeats cannot be recorded and every worker looks silent. So after startup and
    after any gap longer than `max_gap` between two contacts with the database, no worker is
    declared lost until `lost_after` has passed again: live workers heartbeat meanwhile.
    """

    def __init__(self, lost_after: float, max_gap: float) -> None:
        self.lost_after = lost_after
        self.max_gap = max_gap
        self._since = 0.0
        self._last_contact: float | None = None

    def contact(self, now: float) -> bool:
        """Note that the database answered at `now`; returns whether silence may be judged."""
        if self._last_contact is None or now - self._last_contact > self.max_gap:
            if self._last_contact is not None:
                log.warning(
                    "no database contact for %.1fs: declaring no worker lost for %.0fs",
                    now - self._last_contact,
                    self.lost_after,
                )
            self._since = now
        self._last_contact = now
        return now - self._since >= self.lost_after


async def reaper_loop(
    pool: AsyncConnectionPool, config: CoordinatorConfig, wakeups: Wakeups, stop: asyncio.Event
) -> None:
    hearing = Hearing(config.lost_after, config.heartbeat_interval + REAP_INTERVAL)
    passes, sweep_next = 0, True
    while not stop.is_set():
        try:
            sweep = sweep_next or passes % SWEEP_EVERY == 0
            ended = await reap_once(pool, config, wakeups, hearing, sweep)
            sweep_next = ended == SWEEP_BATCH  # maybe more are left
            passes += 1
        except DB_ERRORS as exc:
            DATABASE_ERRORS.labels("reap").inc()
            log.warning("lost-worker scan failed (%s); retrying", exc)
            sweep_next = True
        await sleep_or_stop(stop, REAP_INTERVAL)
