"""GET /events on real processes: the stream a real client reads over HTTP, its filters, a
reconnect with Last-Event-ID that misses nothing, a late commit that is never skipped, and the
pruning of expired events."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from devtools.cluster import Cluster, wait_for
from devtools.tasks import submit
from store import events

DEADLINE = 60.0


@dataclass
class Message:
    id: str | None
    event: str | None
    data: list[dict[str, Any]]


class Stream:
    """A Server-Sent Events client over httpx streaming: messages as the server sends them."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.last_id: str | None = None

    def next_message(self, deadline: float | None = None) -> Message:
        """The next message; AssertionError once `deadline` (monotonic) has passed (checked as
        lines arrive: the server sends a comment every 15 s when nothing happens)."""
        fields: dict[str, list[str]] = {}
        for line in self.lines:
            if deadline is not None and time.monotonic() > deadline:
                raise AssertionError("no message before the deadline")
            if line == "":
                if "data" in fields or "event" in fields:
                    break
                fields = {}  # a comment or a retry: not a message
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        else:
            raise AssertionError("the stream ended")
        message_id = fields.get("id", [None])[-1]
        if message_id is not None:
            self.last_id = message_id
        data = json.loads("\n".join(fields.get("data", ["[]"])))
        return Message(message_id, fields.get("event", [None])[-1], data)

    def events_until(self, done: Any, timeout: float = DEADLINE) -> list[dict[str, Any]]:
        """Events, in order, until done(events so far) is true."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not done(seen):
            assert time.monotonic() < deadline, f"timed out; got {seen}"
            message = self.next_message(deadline)
            assert message.event == "events"
            seen += message.data
        return seen


@contextmanager
def open_stream(
    cluster: Cluster, headers: dict[str, str] | None = None, **params: Any
) -> Iterator[Stream]:
    with (
        httpx.Client(base_url=cluster.scheduler_url, timeout=httpx.Timeout(30.0)) as client,
        client.stream("GET", "/events", params=params, headers=headers or {}) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


def of_task(seen: list[dict[str, Any]], task_id: str, kind: str) -> list[str]:
    return [e["data"]["status"] for e in seen if e["task_id"] == task_id and e["kind"] == kind]


# A command that ends at once may be reported started and ended together: no running.
LIFE = (["queued", "dispatched", "running", "succeeded"], ["queued", "dispatched", "succeeded"])
ATTEMPT_LIFE = (["dispatched", "running", "succeeded"], ["dispatched", "succeeded"])


def ended(task_id: str, kind: str = "task") -> Any:
    return lambda seen: "succeeded" in of_task(seen, task_id, kind)


def test_a_tasks_life_streams_in_order_and_resumes_where_the_client_left(cluster):
    with open_stream(cluster) as stream:
        first = submit(cluster, "echo one; sleep 0.5")
        seen = stream.events_until(ended(first))
        last_id = stream.last_id
    assert of_task(seen, first, "task") in LIFE
    assert of_task(seen, first, "attempt") in ATTEMPT_LIFE
    created = next(e for e in seen if e["task_id"] == first)
    assert created["data"]["command"] == "echo one; sleep 0.5"
    assert created["at"].endswith("Z")
    assert {e["worker_id"] for e in seen if e["kind"] == "attempt"} <= {"worker-1", "worker-2"}

    # While no client listens, a second task runs to its end; resuming misses none of it and
    # repeats nothing from before.
    second = submit(cluster, "echo two")
    wait_for(
        lambda: cluster.http.get(f"/tasks/{second}").json()["status"] == "succeeded",
        DEADLINE,
        message="the second task to finish",
    )
    assert last_id is not None
    with open_stream(cluster, headers={"Last-Event-ID": last_id}) as stream:
        resumed = stream.events_until(ended(second))
    assert of_task(resumed, first, "task") == []
    assert of_task(resumed, second, "task") in LIFE


def test_filters_keep_one_task_and_the_kinds_asked_for(cluster):
    other = submit(cluster, "sleep 0.2")
    mine = submit(cluster, "sleep 0.2", delay_seconds=1)
    start = {"Last-Event-ID": "0-0"}  # from the oldest event kept
    with open_stream(cluster, headers=start, task_id=mine, kind="attempt") as stream:
        seen = stream.events_until(ended(mine, "attempt"))
    assert {e["task_id"] for e in seen} == {mine}
    assert {e["kind"] for e in seen} == {"attempt"}
    assert of_task(seen, mine, "attempt") == ATTEMPT_LIFE[0]  # it sleeps: started, then ended
    assert other not in {e["task_id"] for e in seen}


def test_an_event_that_commits_late_is_served_not_skipped(cluster, db):
    with open_stream(cluster, kind="task") as stream:
        late = str(uuid.uuid4())
        with psycopg.connect(cluster.database_url) as slow:
            # Its event gets an id now, but commits only after a later transaction's.
            slow.execute(
                "INSERT INTO tasks (id, command, scheduled_at, run_at)"
                " VALUES (%s, 'echo late', now() + interval '1 hour', now() + interval '1 hour')",
                (late,),
            )
            early = submit(cluster, "echo early", delay_seconds=3600)
            time.sleep(1)  # give the stream time to (wrongly) serve the early event first
            slow.commit()
        seen = stream.events_until(lambda s: {late, early} <= {e["task_id"] for e in s})
    order = [e["task_id"] for e in seen if e["task_id"] in (late, early)]
    assert order == [late, early]


@pytest.mark.parametrize(
    ("params", "headers", "says"),
    [
        ({"kind": "everything"}, {}, "kind"),
        ({"task_id": "nope"}, {}, "not a UUID"),
        ({}, {"Last-Event-ID": "yesterday"}, "Last-Event-ID"),
        ({"since": "1"}, {}, "since"),
    ],
)
def test_a_malformed_request_is_a_422_saying_what_is_wrong(cluster_factory, params, headers, says):
    alone = cluster_factory(start=False)
    alone.start_scheduler()
    response = alone.http.get("/events", params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert says in response.text


def test_expired_events_are_pruned_in_batches_and_recent_ones_kept(db, database_url):
    db.execute(
        "INSERT INTO events (kind, worker_id, at, data)"
        " SELECT 'worker', 'w' || i, now() - interval '2 hours', '{}' FROM generate_series(1, 25) i"
    )
    db.execute("INSERT INTO events (kind, worker_id, data) VALUES ('worker', 'fresh', '{}')")

    async def prune() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return [await events.prune(conn, 3600, batch=10) for _ in range(4)]

    assert asyncio.run(prune()) == [10, 10, 5, 0]
    rows = db.execute("SELECT worker_id FROM events").fetchall()
    assert rows == [("fresh",)]


def test_a_client_further_behind_than_the_kept_events_is_told_of_the_gap(cluster, db):
    with open_stream(cluster) as stream:
        submit(cluster, "echo before the gap", delay_seconds=3600)
        stream.events_until(lambda seen: len(seen) >= 1)
        behind = stream.last_id
    assert behind is not None
    missed = submit(cluster, "echo missed", delay_seconds=3600)  # after the client left
    db.execute("UPDATE events SET at = at - interval '2 hours'")
    assert db.execute("SELECT count(*) FROM events WHERE task_id = %s", (missed,)).fetchone() == (
        1,
    )

    async def prune() -> int:
        async with await psycopg.AsyncConnection.connect(cluster.database_url) as conn:
            await conn.set_autocommit(True)
            return await events.prune(conn, events.KEEP_SECONDS)

    assert asyncio.run(prune()) >= 1
    after = submit(cluster, "echo after the gap", delay_seconds=3600)
    with open_stream(cluster, headers={"Last-Event-ID": behind}) as stream:
        gap = stream.next_message()
        assert gap.event == "gap", gap
        resumed = stream.events_until(lambda seen: after in {e["task_id"] for e in seen})
    assert "deleted" in str(gap.data)
    assert missed not in {e["task_id"] for e in resumed}
    assert [e["data"]["status"] for e in resumed if e["task_id"] == after] == ["queued"]


def test_a_long_transaction_in_another_database_does_not_hold_the_stream(cluster, pg_admin_url):
    with psycopg.connect(pg_admin_url) as elsewhere:
        # A transaction with an id, left open in another database of the same server.
        elsewhere.execute("SELECT pg_current_xact_id()")
        with open_stream(cluster, kind="task") as stream:
            task_id = submit(cluster, "echo while another database waits", delay_seconds=3600)
            seen = stream.events_until(lambda s: task_id in {e["task_id"] for e in s}, 30)
        assert of_task(seen, task_id, "task") == ["queued"]
        elsewhere.rollback()
