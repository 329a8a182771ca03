"""The fleet as operators read it: workers, their slots and heartbeats, the attempts they hold.

Coordinators write these rows (store/dispatch.py); nothing here changes them. A worker is lost
exactly when a coordinator has declared it so (`lost_at`, set by dispatch.declare_lost_workers
and cleared by its next heartbeat): readers never apply a rule of their own.
"""

from __future__ import annotations

from store.db import Conn, fetch_all, fetch_one
from store.models import WorkerAttempt, WorkerRow

# The columns of a WorkerRow and where they come from: the row, how busy it is (its open
# attempts, worker_load of migration 018), and its heartbeat's age by the database clock
# (never negative, however the heartbeat's transaction raced this one).
_WORKER_COLUMNS = """
    w.id, w.address, w.slots, l.open_attempts AS busy, w.draining, w.first_seen_at,
    w.last_heartbeat_at,
    greatest(extract(epoch FROM now() - w.last_heartbeat_at), 0)::float8
        AS heartbeat_age_seconds,
    w.lost_at
FROM workers w JOIN worker_load l ON l.worker_id = w.id
"""

# Every worker ever registered, by id.
LIST_WORKERS = f"SELECT {_WORKER_COLUMNS} ORDER BY w.id"


async def list_workers(conn: Conn) -> list[WorkerRow]:
    return await fetch_all(conn, WorkerRow, LIST_WORKERS, {})


# One worker.
SELECT_WORKER = f"SELECT {_WORKER_COLUMNS} WHERE w.id = %(id)s"


async def get_worker(conn: Conn, worker_id: str) -> WorkerRow | None:
    return await fetch_one(conn, WorkerRow, SELECT_WORKER, {"id": worker_id})


# The attempts a worker holds open (attempts_open_by_worker), oldest hand-over first.
OPEN_ATTEMPTS_OF_WORKER = """
SELECT a.task_id, a.attempt, a.status, a.picked_at, a.started_at, t.command, t.schedule_id
FROM attempts a JOIN tasks t ON t.id = a.task_id
WHERE a.worker_id = %(id)s AND a.ended_at IS NULL
ORDER BY a.picked_at, a.task_id
"""


async def open_attempts_of_worker(conn: Conn, worker_id: str) -> list[WorkerAttempt]:
    return await fetch_all(conn, WorkerAttempt, OPEN_ATTEMPTS_OF_WORKER, {"id": worker_id})
