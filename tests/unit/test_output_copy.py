"""The capped copy of an attempt's output: deltas read from a real file by the worker's
OutputFile, merged by the coordinator's statement into real PostgreSQL, served by the
scheduler's cursor. Whatever the delivery pattern (lost acknowledgements, deltas sent twice or
overtaken), the copy is the first `cap` bytes, the omitted count and the last `cap` bytes."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from common.output import omission_marker
from coordinator_svc.reports import output_deltas
from proto import skiplock_pb2 as pb
from scheduler_svc.routes.output import Cursor, Encoder
from store import outputs
from store.models import AttemptOutput
from tests.support.coordination import claim_for, open_pool
from worker_svc.output import OutputFile

WORKER = "worker-under-test"


@dataclass
class Attempt:
    """A claimed attempt, an output file being written, and the worker's view of it."""

    pool: AsyncConnectionPool
    ref: pb.AttemptRef
    writer: int
    output: OutputFile
    written: bytearray

    def write(self, data: bytes) -> None:
        os.write(self.writer, data)
        self.written += data

    def delta(self) -> pb.OutputDelta | None:
        return self.output.delta(self.ref, WORKER)

    async def merge(self, *deltas: pb.OutputDelta, worker_id: str = WORKER) -> None:
        for delta in deltas:
            delta.worker_id = worker_id
        async with self.pool.connection() as conn:
            await outputs.merge_outputs(conn, output_deltas(list(deltas)))

    async def ship(self) -> None:
        """One delivery that is acknowledged."""
        delta = self.delta()
        if delta is not None:
            await self.merge(delta)
            self.output.acknowledge(delta)

    async def stored(self) -> AttemptOutput:
        async with self.pool.connection() as conn:
            copy = await outputs.get_attempt_output(
                conn, uuid.UUID(self.ref.task_id), self.ref.attempt
            )
        assert copy is not None
        return copy

    def expected(self, cap: int) -> tuple[bytes, int, bytes]:
        """(head, omitted, tail) of what was written."""
        data = bytes(self.written)
        tail_offset = max(cap, len(data) - cap) if len(data) > cap else len(data)
        return data[:cap], tail_offset - min(len(data), cap), data[tail_offset:]


@asynccontextmanager
async def attempts(
    database_url: str, tmp_path: Path, cap: int, count: int
) -> AsyncIterator[list[Attempt]]:
    async with open_pool(database_url) as pool:
        made: list[Attempt] = []
        try:
            for claimed in await claim_for(pool, WORKER, "127.0.0.1:1", count):
                path = tmp_path / f"{claimed.task_id}.log"
                reader = os.open(path, os.O_RDWR | os.O_CREAT)
                writer = os.open(path, os.O_WRONLY | os.O_APPEND)
                ref = pb.AttemptRef(task_id=str(claimed.task_id), attempt=claimed.attempt)
                made.append(Attempt(pool, ref, writer, OutputFile(reader, cap), bytearray()))
            yield made
        finally:
            for a in made:
                os.close(a.writer)
                a.output.close()


@asynccontextmanager
async def attempt(database_url: str, tmp_path: Path, cap: int) -> AsyncIterator[Attempt]:
    async with attempts(database_url, tmp_path, cap, 1) as (one,):
        yield one


def stored_parts(copy: AttemptOutput) -> tuple[bytes, int, bytes]:
    head, tail = copy.head or b"", copy.tail or b""
    assert copy.size == copy.tail_offset + len(tail)
    return head, copy.tail_offset - len(head), tail


def chunks(rng: random.Random, cap: int) -> list[bytes]:
    """Writes from one byte to several caps, bytes of every value."""
    sizes = [rng.choice([1, 7, cap // 3, cap - 1, cap, cap + 1, 3 * cap]) for _ in range(12)]
    return [rng.randbytes(max(size, 1)) for size in sizes]


@pytest.mark.parametrize("seed", range(6))
def test_the_copy_is_head_omitted_and_tail_however_deliveries_go(database_url, tmp_path, seed):
    rng = random.Random(seed)
    cap = rng.choice([1, 5, 64, 1000])

    async def scenario() -> None:
        async with attempt(database_url, tmp_path, cap) as a:
            for chunk in chunks(rng, cap):
                a.write(chunk)
                fate = rng.choice(["acknowledged", "lost", "twice", "unsent"])
                delta = a.delta()
                if delta is None or fate == "unsent":
                    continue
                await a.merge(delta)
                if fate == "twice":
                    await a.merge(delta)
                if fate != "lost":  # a lost answer: the next delta starts where this one did
                    a.output.acknowledge(delta)
                assert stored_parts(await a.stored()) == a.expected(cap)
            await a.ship()
            assert stored_parts(await a.stored()) == a.expected(cap)

    asyncio.run(scenario())


def test_a_delta_overtaken_by_a_later_one_changes_nothing(database_url, tmp_path):
    async def scenario() -> None:
        async with attempt(database_url, tmp_path, cap=4) as a:
            a.write(b"abcdef")
            early = a.delta()
            a.write(b"ghijklmnop")
            late = a.delta()  # from the same acknowledged offset, reaching further
            assert early is not None and late is not None
            await a.merge(late)
            await a.merge(early)
            assert stored_parts(await a.stored()) == (b"abcd", 8, b"mnop")

    asyncio.run(scenario())


def test_only_the_attempts_own_worker_writes_its_output_and_only_while_it_is_open(
    database_url, tmp_path
):
    async def scenario() -> None:
        async with attempt(database_url, tmp_path, cap=100) as a:
            a.write(b"not mine")
            delta = a.delta()
            assert delta is not None
            await a.merge(delta, worker_id="another-worker")
            assert (await a.stored()).size == 0
            async with a.pool.connection() as conn:
                await conn.execute(
                    "UPDATE attempts SET status = 'failed', reason = 'worker_lost',"
                    " ended_at = now() WHERE task_id = %s",
                    (uuid.UUID(a.ref.task_id),),
                )
            await a.merge(delta)
            copy = await a.stored()
            assert (copy.size, copy.head, copy.ended) == (0, b"", True)

    asyncio.run(scenario())


def test_several_attempts_merge_in_one_statement(database_url, tmp_path):
    async def scenario() -> None:
        async with attempts(database_url, tmp_path, 3, 2) as (a, b):
            a.write(b"first attempt")
            b.write(b"xy")
            deltas = [d for d in (a.delta(), b.delta()) if d is not None]
            await a.merge(*deltas)
            assert stored_parts(await a.stored()) == (b"fir", 7, b"mpt")
            assert stored_parts(await b.stored()) == (b"xy", 0, b"")

    asyncio.run(scenario())


def render(copy: AttemptOutput, encoding: str) -> bytes:
    encoder = Encoder("text" if encoding == "text" else "raw")
    return Cursor().advance(copy, encoder) + encoder.end()


def copy_of(head: bytes, omitted: int, tail: bytes) -> AttemptOutput:
    tail_offset = len(head) + omitted
    return AttemptOutput(1, 1, True, tail_offset + len(tail), tail_offset, head, tail)


def test_text_replaces_what_is_not_utf8_and_raw_keeps_every_byte():
    copy = copy_of(b"caf\xc3", 0, b"\xa9 \xff\xfe ok")  # é split between head and tail
    assert render(copy, "raw") == b"caf\xc3\xa9 \xff\xfe ok"
    assert render(copy, "text").decode() == "café \ufffd\ufffd ok"


def test_the_marker_stands_between_head_and_tail_and_ends_a_split_character():
    copy = copy_of(b"ab\xc3", 10, b"\xa9cd")
    assert render(copy, "raw") == b"ab\xc3" + omission_marker(10) + b"\xa9cd"
    assert render(copy, "text").decode() == "ab\ufffd\n[skiplock: 10 bytes omitted]\n\ufffdcd"


def test_a_follower_gets_each_byte_once_and_a_marker_for_each_stretch_it_missed():
    cursor, encoder = Cursor(), Encoder("raw")
    seen = [
        cursor.advance(copy_of(b"ab", 0, b""), encoder),
        cursor.advance(copy_of(b"abcd", 0, b"ef"), encoder),
        cursor.advance(copy_of(b"abcd", 0, b"efgh"), encoder),
        cursor.advance(AttemptOutput(1, 1, False, 8, 4, None, None), encoder),  # unchanged
        cursor.advance(copy_of(b"abcd", 6, b"klmn"), encoder),
    ]
    assert seen == [b"ab", b"cdef", b"gh", b"", omission_marker(2) + b"klmn"]
