"""The event stream: reading it in order without ever skipping a late commit, and pruning it.

Triggers write the rows (store/migrations/006_events.sql). A position is (xid, id): readers
take events in that order and only those of transactions older than every transaction still in
progress that may write here (HORIZON), so an event that commits late is still ahead of every
position served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row

from store.db import Conn, fetch_value
from store.vocabulary import EventKind

# Events are kept this long: GET /events resumes a client from Last-Event-ID over it, and
# coordinators delete older ones (coordinator_svc/pruning.py).
KEEP_SECONDS = 30 * 60
# Past every id: a position (xid, LAST_ID) covers every event of that transaction.
LAST_ID = 2**63 - 1


@dataclass(frozen=True, order=True)
class Position:
    xid: int
    id: int


@dataclass(frozen=True)
class Event:
    xid: int
    id: int
    at: datetime
    kind: str
    task_id: UUID | None
    schedule_id: UUID | None
    worker_id: str | None
    data: dict[str, Any]

    @property
    def position(self) -> Position:
        return Position(self.xid, self.id)


@dataclass(frozen=True)
class EventFilter:
    kinds: tuple[EventKind, ...] = ()
    task_id: UUID | None = None
    schedule_id: UUID | None = None


# The horizon: the oldest transaction still in progress that may write this database's events,
# or the next transaction id when none is. Transactions that pg_stat_activity shows running in
# another database cannot, so a long one there does not hold the stream back; every other
# in-progress transaction counts (one that ended after the snapshot, or that we may not see,
# included), so no event of this database is ever passed over.
HORIZON = """
SELECT coalesce(
    (SELECT min(x) FROM pg_snapshot_xip(s.snap) AS x
     WHERE mod(x::text::bigint, 4294967296) NOT IN (
         SELECT backend_xid::text::bigint FROM pg_stat_activity
         WHERE backend_xid IS NOT NULL
           AND datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))),
    pg_snapshot_xmax(s.snap)) AS horizon
FROM (SELECT pg_current_snapshot() AS snap) s
"""

# Where a reader that wants only what happens from now on starts: before every transaction
# still in progress.
START = f"SELECT horizon::text::bigint - 1 FROM ({HORIZON}) h"


async def start(conn: Conn) -> Position:
    return Position(int(await fetch_value(conn, START)), LAST_ID)


# Events after a position, in order, matching the filter, of transactions before the horizon
# (on every row; the event columns are NULL when none).
READ = f"""
WITH h AS ({HORIZON})
SELECT h.horizon::text::bigint AS horizon, e.*
FROM h LEFT JOIN LATERAL (
    SELECT e.xid::text::bigint AS xid, e.id, e.at, e.kind, e.task_id, e.schedule_id,
           e.worker_id, e.data
    FROM events e
    WHERE (e.xid, e.id) > (%(xid)s::text::xid8, %(id)s::bigint)
      AND e.xid < h.horizon
      AND (%(kinds)s::text[] IS NULL OR e.kind = ANY(%(kinds)s::text[]))
      AND (%(task_id)s::uuid IS NULL OR e.task_id = %(task_id)s)
      AND (%(schedule_id)s::uuid IS NULL OR e.schedule_id = %(schedule_id)s)
    ORDER BY e.xid, e.id
    LIMIT %(limit)s
) e ON true
"""


async def read(
    conn: Conn, after: Position, where: EventFilter, limit: int
) -> tuple[list[Event], Position]:
    """Up to `limit` events after `after`, and the position to read from next: the last event
    returned, or past everything the horizon allows when fewer than `limit` matched."""
    cur = conn.cursor(row_factory=dict_row)
    params = {
        "xid": after.xid,
        "id": after.id,
        "kinds": [str(k) for k in where.kinds] or None,
        "task_id": where.task_id,
        "schedule_id": where.schedule_id,
        "limit": limit,
    }
    await cur.execute(READ, params)
    rows: Sequence[dict[str, Any]] = await cur.fetchall()
    horizon = int(rows[0]["horizon"])
    found = [Event(**{k: v for k, v in row.items() if k != "horizon"}) for row in rows if row["id"]]
    if len(found) == limit:
        return found, found[-1].position
    caught_up = Position(horizon - 1, LAST_ID)
    return found, max(caught_up, after)


# Delete up to `batch` of the oldest events that are older than `keep` seconds, and remember
# the furthest position deleted.
PRUNE = """
WITH deleted AS (
    DELETE FROM events WHERE id IN (
        SELECT id FROM (SELECT id, at FROM events ORDER BY id LIMIT %(batch)s) oldest
        WHERE at < now() - make_interval(secs => %(keep)s))
    RETURNING xid, id
), furthest AS (
    SELECT xid, id FROM deleted ORDER BY xid DESC, id DESC LIMIT 1
), noted AS (
    UPDATE events_pruned p SET xid = f.xid, id = f.id
    FROM furthest f
    WHERE (f.xid, f.id) > (p.xid, p.id)
)
SELECT count(*) FROM deleted
"""


async def prune(conn: Conn, keep_seconds: float, batch: int = 5000) -> int:
    """Delete a batch of expired events; returns how many (call again while it is `batch`)."""
    return int(await fetch_value(conn, PRUNE, {"keep": keep_seconds, "batch": batch}) or 0)


# The furthest position pruning has deleted.
PRUNED = "SELECT xid::text::bigint, id FROM events_pruned"


async def pruned_through(conn: Conn) -> Position:
    cur = await conn.execute(PRUNED)
    row = await cur.fetchone()
    return Position(int(row[0]), int(row[1])) if row else Position(0, 0)
