"""GET /tasks/{id}/output: an attempt's output from its copy in the database (never from a
worker), whole or followed while the attempt runs."""

from __future__ import annotations

import asyncio
import codecs
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from psycopg_pool import AsyncConnectionPool

from common.output import omission_marker
from scheduler_svc.deps import Pool, parse_uuid
from store import outputs
from store.models import AttemptOutput

# How often a follower reads the stored copy; workers ship output about every 0.5 s, so a
# follower is about a second behind the command at most.
FOLLOW_POLL_SECONDS = 0.25
MEDIA_TYPES = {"text": "text/plain; charset=utf-8", "raw": "application/octet-stream"}

router = APIRouter()

Encoding = Literal["text", "raw"]


class Encoder:
    """Bytes as they are sent: raw, or text with every byte sequence that is not UTF-8 replaced
    by U+FFFD (a character split between two reads is decoded whole)."""

    def __init__(self, encoding: Encoding) -> None:
        text = encoding == "text"
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace") if text else None

    def encode(self, data: bytes) -> bytes:
        return data if self._decoder is None else self._decoder.decode(data).encode()

    def omitted(self, count: int) -> bytes:
        """The marker for bytes left out: what came before it ends there."""
        return self.end() + omission_marker(count)

    def end(self) -> bytes:
        if self._decoder is None:
            return b""
        rest = self._decoder.decode(b"", final=True).encode()
        self._decoder.reset()
        return rest


@dataclass
class Cursor:
    """How far into an attempt's output a response has got."""

    sent: int = 0

    def advance(self, copy: AttemptOutput, encoder: Encoder) -> bytes:
        """What the stored copy holds beyond what was sent: new head bytes, a marker for bytes
        left out before the tail, then new tail bytes."""
        head, tail = copy.head or b"", copy.tail or b""
        if copy.head is None:  # unchanged since the last read
            return b""
        out = []
        if self.sent < len(head):
            out.append(encoder.encode(head[self.sent :]))
            self.sent = len(head)
        if copy.tail_offset > self.sent:
            out.append(encoder.omitted(copy.tail_offset - self.sent))
            self.sent = copy.tail_offset
        if copy.size > self.sent:
            out.append(encoder.encode(tail[self.sent - copy.tail_offset :]))
            self.sent = copy.size
        return b"".join(out)


async def read_copy(
    pool: AsyncConnectionPool, task_id: uuid.UUID, attempt: int | None, seen_size: int | None
) -> AttemptOutput | None:
    async with pool.connection() as conn:
        return await outputs.get_attempt_output(conn, task_id, attempt, seen_size)


def check_found(copy: AttemptOutput | None, task_id: uuid.UUID, attempt: int | None) -> int:
    """The attempt number, or the 404 that says what is missing."""
    if copy is None:
        raise HTTPException(404, f"no task with id {task_id}")
    if copy.latest == 0:
        raise HTTPException(404, f"task {task_id} has not been dispatched yet, so it has no output")
    if copy.attempt is None:
        raise HTTPException(
            404, f"task {task_id} has no attempt {attempt} (its latest is {copy.latest})"
        )
    return copy.attempt


async def follow(
    pool: AsyncConnectionPool, task_id: uuid.UUID, copy: AttemptOutput, encoder: Encoder
) -> AsyncIterator[bytes]:
    """New bytes as they are stored, until the attempt has ended and all of it was sent."""
    cursor = Cursor()
    current: AttemptOutput | None = copy
    while current is not None and current.attempt is not None:
        chunk = cursor.advance(current, encoder)
        if chunk:
            yield chunk
        if current.ended:
            break
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        current = await read_copy(pool, task_id, copy.attempt, seen_size=cursor.sent)
    rest = encoder.end()
    if rest:
        yield rest


OUTPUT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The attempt's combined stdout and stderr: the first and last bytes kept "
        "(with a marker line for those left out between them)",
        "content": {"text/plain": {"schema": {"type": "string"}}, "application/octet-stream": {}},
        "headers": {
            "X-Skiplock-Attempt": {
                "description": "the attempt shown",
                "schema": {"type": "integer"},
            },
            "X-Skiplock-Output-Bytes": {
                "description": "bytes the command wrote so far",
                "schema": {"type": "integer"},
            },
            "X-Skiplock-Output-Omitted": {
                "description": "bytes left out between the first and the last ones kept",
                "schema": {"type": "integer"},
            },
            "X-Skiplock-Attempt-Ended": {
                "description": "whether the attempt has ended (its output is complete)",
                "schema": {"type": "string", "enum": ["true", "false"]},
            },
        },
    },
    404: {"description": "No such task or attempt, or the task was never dispatched"},
}


@router.get("/tasks/{task_id}/output", response_class=Response, responses=OUTPUT_RESPONSES)
async def task_output(
    pool: Pool,
    task_id: str,
    attempt: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    follow_output: Annotated[bool, Query(alias="follow")] = False,
    encoding: Encoding = "text",
) -> Response:
    """An attempt's output (default: the latest attempt). `follow=true` streams new bytes as
    they arrive until the attempt ends; `encoding=raw` returns the bytes unchanged, `text`
    replaces what is not UTF-8 with U+FFFD."""
    tid = parse_uuid(task_id, "task_id")
    copy = await read_copy(pool, tid, attempt, seen_size=None)
    number = check_found(copy, tid, attempt)
    assert copy is not None
    headers = {
        "X-Skiplock-Attempt": str(number),
        "X-Skiplock-Output-Bytes": str(copy.size),
        "X-Skiplock-Output-Omitted": str(copy.tail_offset - len(copy.head or b"")),
        "X-Skiplock-Attempt-Ended": "true" if copy.ended else "false",
    }
    encoder = Encoder(encoding)
    if follow_output:
        return StreamingResponse(
            follow(pool, tid, copy, encoder), media_type=MEDIA_TYPES[encoding], headers=headers
        )
    body = Cursor().advance(copy, encoder) + encoder.end()
    return Response(body, media_type=MEDIA_TYPES[encoding], headers=headers)
