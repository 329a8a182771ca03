"""Wake-up events for the coordinator's loops, fed by NOTIFY and by local happenings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import psycopg

from common.loops import Backoff
from common.metrics import DATABASE_ERRORS
from store.wakeups import Topic, listen_wakeup

log = logging.getLogger(__name__)


@dataclass
class Wakeups:
    dispatch: asyncio.Event = field(default_factory=asyncio.Event)
    stops: asyncio.Event = field(default_factory=asyncio.Event)
    cron: asyncio.Event = field(default_factory=asyncio.Event)
    # Whether the last claim filled every free slot (or found none), so that a slot freed by an
    # attempt's end may let more due tasks start: set by the dispatcher.
    slots_wanted: bool = True

    def all(self) -> None:
        self.dispatch.set()
        self.stops.set()
        self.cron.set()

    def on(self, topic: str) -> None:
        """Wake the loop a notification is about; any other payload wakes them all."""
        events: dict[str, asyncio.Event] = {
            Topic.TASKS: self.dispatch,
            Topic.STOPS: self.stops,
            Topic.SCHEDULES: self.cron,
        }
        event = events.get(topic)
        if event is None:
            self.all()
        else:
            event.set()


async def listen_loop(database_url: str, wakeups: Wakeups, stop: asyncio.Event) -> None:
    """LISTEN on its own autocommit connection; reconnect with backoff when it breaks.

    Notifications only shorten waits: every loop also polls, so a lost one delays, never loses.
    """
    backoff = Backoff(0.5, 5.0)
    while not stop.is_set():
        try:
            conn = await psycopg.AsyncConnection.connect(
                database_url, autocommit=True, connect_timeout=5
            )
            async with conn:
                await listen_wakeup(conn)
                wakeups.all()  # anything may have happened while we were not listening
                backoff.reset()
                while not stop.is_set():
                    async for notification in conn.notifies(timeout=1.0):
                        wakeups.on(notification.payload)
        except psycopg.Error as exc:
            DATABASE_ERRORS.labels("listen").inc()
            log.warning("wake-up listener lost its connection (%s); reconnecting", exc)
            await backoff.wait(stop)
