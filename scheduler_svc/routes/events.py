"""GET /events: changes of tasks, attempts, workers and cron ticks as Server-Sent Events, read
from PostgreSQL (store/events.py), so every scheduler replica serves the same stream and a
client resumes on any of them with Last-Event-ID.

Each message carries every event found by one read (up to EVENT_BATCH), as a JSON array, so a
busy system costs a client a few messages a second, not one per change."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from psycopg_pool import AsyncConnectionPool
from sse_starlette import EventSourceResponse, ServerSentEvent

from scheduler_svc.api_models import rfc3339
from scheduler_svc.deps import Pool, parse_uuid
from store import events
from store.events import Event, EventFilter, Position
from store.vocabulary import EventKind

# A reader looks for new events this often (the stream is only as late as this, plus commit).
POLL_SECONDS = 0.25
EVENT_BATCH = 500
PING_SECONDS = 15
# Clients reconnect after this many milliseconds (the SSE `retry` field).
RETRY_MS = 1000
_POSITION = re.compile(r"(\d{1,19})-(\d{1,19})", re.ASCII)

router = APIRouter()

EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A stream of `events` messages, each a JSON array of events in order: "
        '`{"kind", "at", "task_id", "schedule_id", "worker_id", "data"}`; the message id '
        "resumes the stream as Last-Event-ID",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def position_text(position: Position) -> str:
    return f"{position.xid}-{position.id}"


def parse_position(raw: str) -> Position:
    match = _POSITION.fullmatch(raw.strip())
    if match is None or int(match[1]) >= events.LAST_ID or int(match[2]) > events.LAST_ID:
        raise HTTPException(422, "Last-Event-ID is not an event id this stream gave")
    return Position(int(match[1]), int(match[2]))


def event_view(event: Event) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "at": rfc3339(event.at),
        "task_id": None if event.task_id is None else str(event.task_id),
        "schedule_id": None if event.schedule_id is None else str(event.schedule_id),
        "worker_id": event.worker_id,
        "data": event.data,
    }


async def stream(
    pool: AsyncConnectionPool, request: Request, after: Position, where: EventFilter
) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(comment="skiplock events", retry=RETRY_MS)
    async with pool.connection() as conn:
        pruned = await events.pruned_through(conn)
    if after < pruned:
        # Some events after the client's position were deleted: say so, then go on from the
        # oldest kept, so it knows to reload what it shows.
        kept = events.KEEP_SECONDS // 60
        detail = {"detail": f"events older than {kept} minutes were deleted; some were missed"}
        yield ServerSentEvent(json.dumps(detail), event="gap", id=position_text(pruned))
        after = pruned
    while not await request.is_disconnected():
        async with pool.connection() as conn:
            found, after = await events.read(conn, after, where, EVENT_BATCH)
        if found:
            data = json.dumps([event_view(e) for e in found], separators=(",", ":"))
            yield ServerSentEvent(data, event="events", id=position_text(found[-1].position))
        if len(found) < EVENT_BATCH:
            await asyncio.sleep(POLL_SECONDS)


@router.get(
    "/events",
    response_model=None,
    response_class=EventSourceResponse,
    responses=EVENTS_RESPONSES,
)
async def event_stream(
    request: Request,
    pool: Pool,
    kind: Annotated[list[EventKind] | None, Query(max_length=len(EventKind))] = None,
    task_id: Annotated[str | None, Query(max_length=64)] = None,
    schedule_id: Annotated[str | None, Query(max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> EventSourceResponse:
    """Changes as they commit: `kind` (repeat it) picks task, attempt, worker or tick events;
    `task_id` and `schedule_id` keep those about one task or schedule. Without Last-Event-ID
    the stream starts now; with it, right after that event (events are kept 30 minutes;
    a client further behind first gets a `gap` event)."""
    where = EventFilter(
        kinds=tuple(kind or ()),
        task_id=parse_uuid(task_id, "task_id") if task_id is not None else None,
        schedule_id=parse_uuid(schedule_id, "schedule_id") if schedule_id is not None else None,
    )
    if last_event_id is not None:
        after = parse_position(last_event_id)
    else:
        async with pool.connection() as conn:
            after = await events.start(conn)
    return EventSourceResponse(stream(pool, request, after, where), ping=PING_SECONDS)
