"""Attempt endings a coordinator decides itself (refused hand-overs, lost workers' attempts)."""

from __future__ import annotations

import logging

from psycopg_pool import AsyncConnectionPool

from common.loops import Backoff
from common.metrics import DATABASE_ERRORS
from coordinator_svc import transitions
from store import dispatch
from store.db import DB_ERRORS, in_transaction
from store.models import AttemptEnd

log = logging.getLogger(__name__)


async def record_endings(pool: AsyncConnectionPool, ends: list[AttemptEnd]) -> None:
    """Record the endings in one statement; keep trying through a database outage."""
    backoff = Backoff(0.2, 5.0)
    while True:
        try:
            ended = await in_transaction(
                pool, lambda conn: dispatch.end_attempts(conn, ends), atomic=False
            )
            transitions.ended(ended.values())
            return
        except DB_ERRORS as exc:
            DATABASE_ERRORS.labels("record_endings").inc()
            log.warning("could not record attempt end (%s); retrying", exc)
            await backoff.wait()
