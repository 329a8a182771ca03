"""Wake-ups between processes: NOTIFY on one channel, with a topic saying which loop to wake.

Only a hint: every loop also polls, so a lost notification delays work, never loses it.
"""

from __future__ import annotations

from enum import StrEnum

from store.db import Conn

WAKEUP_CHANNEL = "skiplock_wakeup"


class Topic(StrEnum):
    """What a wake-up is about."""

    TASKS = "tasks"  # new due work: dispatchers
    STOPS = "stops"  # cancellations to deliver: stop loops
    SCHEDULES = "schedules"  # schedules to (re)plan: cron loops


# Wake every coordinator's loops about the given topics ('' wakes all).
NOTIFY_WAKEUP = f"SELECT pg_notify('{WAKEUP_CHANNEL}', t) FROM unnest(%(topics)s::text[]) AS t"


async def notify_wakeup(conn: Conn, *topics: Topic) -> None:
    """Notify about each topic; with none, wake every loop."""
    everything: list[str] = [""]
    await conn.execute(NOTIFY_WAKEUP, {"topics": list(topics) or everything})


# Subscribe this (autocommit) connection to the wake-up channel.
LISTEN_WAKEUP = f"LISTEN {WAKEUP_CHANNEL}"


async def listen_wakeup(conn: Conn) -> None:
    await conn.execute(LISTEN_WAKEUP)
