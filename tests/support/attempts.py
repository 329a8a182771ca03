"""One attempt at a time, for tests: the store's batch statements with a single element."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from store import dispatch
from store.models import AttemptEnd, AttemptKey, AttemptStart


async def end_attempt(
    conn: psycopg.AsyncConnection[Any], end: AttemptEnd
) -> tuple[bool, str | None]:
    """End one open attempt. Returns (whether it was open, the task's new status if it moved)."""
    ended = await dispatch.end_attempts(conn, [end])
    key = AttemptKey(end.task_id, end.attempt)
    return key in ended, ended[key].task_status if key in ended else None


async def mark_attempt_running(
    conn: psycopg.AsyncConnection[Any],
    key: AttemptKey,
    worker_id: str,
    started_at: datetime,
    output_path: str,
) -> bool:
    """Record that one attempt started; False when the worker should stop it instead."""
    start = AttemptStart(key.task_id, key.attempt, worker_id, started_at, output_path)
    return any(s.keep for s in await dispatch.mark_attempts_running(conn, [start]))
