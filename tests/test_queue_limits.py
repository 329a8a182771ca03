"""Queue limits: at most max_running tasks of a queue run at once across the fleet.

Against the store: the claim takes no more than a limited queue has room for, alone and with
concurrency keys, pauses and a lowered limit; the queue's running count stays exact while a
limit is set as attempts are claimed and ended by concurrent claimers (prepared and unprepared
statements). On a real cluster: two coordinators racing over one limited queue never run more
than the limit, measured by the commands themselves, and a limit lowered below what runs lets
it finish and starts the rest one at a time. Through the HTTP API: set, shown, cleared,
and bad input refused with nothing written.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from devtools.cluster import wait_for
from store import dispatch, queues
from store.models import AttemptEnd, ClaimedAttempt
from store.vocabulary import AttemptStatus
from tests.support.overlap import OverlapProbe

Db = psycopg.Connection[Any]
AConn = psycopg.AsyncConnection[Any]


def run(url: str, work: Callable[[AConn], Any], **connect: Any) -> Any:
    """Run async `work` in one transaction on a fresh connection."""

    async def go() -> Any:
        async with (
            await psycopg.AsyncConnection.connect(url, **connect) as conn,
            conn.transaction(),
        ):
            return await work(conn)

    return asyncio.run(go())


def add_worker(db: Db, worker_id: str, slots: int, served: list[str]) -> None:
    db.execute(
        "INSERT INTO workers (id, address, slots, last_heartbeat_at, queues)"
        " VALUES (%s, '127.0.0.1:9', %s, now(), %s)",
        (worker_id, slots, sorted(served)),
    )


def add_tasks(
    db: Db, queue: str, n: int, key: str | None = None, key_limit: int | None = None
) -> list[uuid.UUID]:
    """n due tasks of the queue, in claim order (the first is due earliest)."""
    ids = [uuid.uuid4() for _ in range(n)]
    db.execute(
        "INSERT INTO tasks (id, command, scheduled_at, run_at, queue, concurrency_key,"
        " concurrency_limit)"
        " SELECT id, 'true', now() - interval '1 hour' + o * interval '1 ms',"
        "        now() - interval '1 hour' + o * interval '1 ms', %s, %s, %s"
        " FROM unnest(%s::uuid[]) WITH ORDINALITY AS x (id, o)",
        (queue, key, key_limit, ids),
    )
    return ids


def set_limit(url: str, name: str, max_running: int | None) -> None:
    run(url, lambda conn: queues.set_limit(conn, name, max_running))


def claim(url: str) -> list[ClaimedAttempt]:
    async def work(conn: AConn) -> list[ClaimedAttempt]:
        return (await dispatch.claim_for_free_slots(conn, 3600.0, 0)).attempts

    result: list[ClaimedAttempt] = run(url, work)
    return result


def succeeded(attempt: ClaimedAttempt) -> AttemptEnd:
    return AttemptEnd(
        attempt.task_id, attempt.attempt, AttemptStatus.SUCCEEDED, None,
        worker_id=attempt.worker_id, exit_code=0,
    )  # fmt: skip


def end(url: str, attempts: list[ClaimedAttempt]) -> None:
    run(url, lambda conn: dispatch.end_attempts(conn, [succeeded(a) for a in attempts]))


def counter(db: Db, name: str) -> tuple[int | None, int]:
    """(max_running, running) of the queue's row."""
    row = db.execute("SELECT max_running, running FROM queues WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return row[0], row[1]


OPEN_IN_QUEUE = (
    "SELECT count(*) FROM attempts a JOIN tasks t ON t.id = a.task_id"
    " WHERE a.ended_at IS NULL AND t.queue = %s"
)


def open_in(db: Db, name: str) -> int:
    row = db.execute(OPEN_IN_QUEUE, (name,)).fetchone()
    assert row is not None
    return int(row[0])


def in_queue(attempts: list[ClaimedAttempt], ids: list[uuid.UUID]) -> list[ClaimedAttempt]:
    return [a for a in attempts if a.task_id in set(ids)]


def waiting_for(url: str, task_id: uuid.UUID) -> str | None:
    reason: str | None = run(url, lambda conn: queues.waiting_for(conn, task_id))
    return reason


# --- the claim --------------------------------------------------------------------------------


def test_a_limited_queue_runs_at_most_its_limit_and_a_lowered_one_lets_runners_finish(
    db, database_url
):
    add_worker(db, "w1", slots=20, served=["default", "q"])
    limited = add_tasks(db, "q", 8)
    free = add_tasks(db, "default", 3)
    set_limit(database_url, "q", 2)
    assert counter(db, "q") == (2, 0)
    first = claim(database_url)
    assert len(in_queue(first, limited)) == 2 and len(in_queue(first, free)) == 3
    assert counter(db, "q") == (2, 2) and open_in(db, "q") == 2
    assert claim(database_url) == []
    assert waiting_for(database_url, limited[-1]) == "queue q is at its limit of 2 running"
    end(database_url, in_queue(first, limited)[:1])
    assert counter(db, "q") == (2, 1)
    assert waiting_for(database_url, limited[-1]) is None
    second = claim(database_url)
    assert len(second) == 1 and counter(db, "q") == (2, 2)
    # Raised (its count is kept): two more start.
    set_limit(database_url, "q", 4)
    held = in_queue(first, limited)[1:] + second + claim(database_url)
    assert len(held) == 4 and counter(db, "q") == (4, 4)
    # Lowered below what runs: they go on, and nothing starts until fewer than 2 run.
    set_limit(database_url, "q", 2)
    for n in (3, 2):
        end(database_url, [held.pop()])
        assert counter(db, "q") == (2, n) and claim(database_url) == []
    end(database_url, [held.pop()])
    (third,) = claim(database_url)
    assert third.task_id in limited and counter(db, "q") == (2, 2)
    # Lifted: the rest start, and the queue is no longer counted.
    set_limit(database_url, "q", None)
    assert len(claim(database_url)) == 8 - 6
    assert counter(db, "q") == (None, 0) and open_in(db, "q") == 4
    # Only a queue that was given a limit or a pause has a row: claims of others write none.
    assert db.execute("SELECT name FROM queues").fetchall() == [("q",)]


def test_a_paused_limited_queue_claims_nothing_until_resumed(db, database_url):
    add_worker(db, "w1", slots=10, served=["q"])
    ids = add_tasks(db, "q", 5)
    set_limit(database_url, "q", 3)
    run(database_url, lambda conn: queues.set_paused(conn, "q", True))
    assert claim(database_url) == []
    assert waiting_for(database_url, ids[0]) == "queue q is paused"
    set_limit(database_url, "q", 2)  # changing the limit keeps the pause, and the other way
    assert claim(database_url) == [] and counter(db, "q") == (2, 0)
    run(database_url, lambda conn: queues.set_paused(conn, "q", False))
    assert len(claim(database_url)) == 2 and counter(db, "q") == (2, 2)
    run(database_url, lambda conn: queues.set_paused(conn, "q", True))
    set_limit(database_url, "q", None)
    assert claim(database_url) == []
    row = db.execute("SELECT paused, max_running, running FROM queues").fetchone()
    assert row == (True, None, 0)


def test_a_queue_limit_and_a_concurrency_key_both_hold(db, database_url):
    add_worker(db, "w1", slots=20, served=["q"])
    keyed = add_tasks(db, "q", 4, key="k", key_limit=2)
    plain = add_tasks(db, "q", 4)
    set_limit(database_url, "q", 3)
    claimed: list[ClaimedAttempt] = []
    for _ in range(3):  # a task held back by its key may leave room for the next claim
        claimed += claim(database_url)
        assert len(claimed) <= 3 and len(in_queue(claimed, keyed)) <= 2
    assert len(in_queue(claimed, keyed)) == 2 and len(in_queue(claimed, plain)) == 1
    assert counter(db, "q") == (3, 3)
    row = db.execute("SELECT running FROM concurrency_keys WHERE key = 'k'").fetchone()
    assert row == (2,)


# --- exactness under concurrency ------------------------------------------------------------


def churn(
    url: str, stop: threading.Event, errors: list[BaseException], seed: int, **connect: Any
) -> None:
    """Claim and end attempts at random until stopped; checks, in each claim's transaction,
    that a limited queue it claimed from holds no more open attempts than its limit and that
    its count says exactly how many."""

    async def claim_and_check(conn: AConn) -> list[ClaimedAttempt]:
        claimed = (await dispatch.claim_for_free_slots(conn, 3600.0, seed)).attempts
        if claimed:
            # The claim holds the row lock of each limited queue it took from, so no end can
            # change the count until it commits: counter and attempts agree now.
            cur = await conn.execute(
                f"SELECT q.max_running, q.running, ({OPEN_IN_QUEUE.replace('%s', 'q.name')})"
                " FROM queues q WHERE q.max_running IS NOT NULL"
                " AND q.name IN (SELECT queue FROM tasks WHERE id = ANY(%s))",
                ([c.task_id for c in claimed],),
            )
            for limit, running, truth in await cur.fetchall():
                assert running == truth, f"counted {running}, open {truth}"
                assert truth <= limit, f"{truth} running over the limit of {limit}"
        return claimed

    async def main() -> None:
        rng = random.Random(seed)
        held: list[ClaimedAttempt] = []
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, **connect) as conn:
            while not stop.is_set():
                async with conn.transaction():
                    held += await claim_and_check(conn)
                rng.shuffle(held)
                k = rng.randint(0, len(held))
                finishing, held = held[:k], held[k:]
                if finishing:
                    async with conn.transaction():
                        await dispatch.end_attempts(conn, [succeeded(a) for a in finishing])
            if held:
                await dispatch.end_attempts(conn, [succeeded(a) for a in held])

    try:
        asyncio.run(main())
    except BaseException as exc:
        errors.append(exc)


def test_the_running_count_is_exact_when_a_limit_is_set_as_attempts_start_and_end(db, database_url):
    for n in range(3):
        add_worker(db, f"w{n}", slots=4, served=["default", "q"])
    add_tasks(db, "q", 4000)
    add_tasks(db, "default", 2000)
    stop = threading.Event()
    errors: list[BaseException] = []
    # Prepared on the server from the first run, and never prepared: each claim and end's
    # snapshot must follow its lock on attempts either way.
    settings: list[dict[str, Any]] = [{"prepare_threshold": 0}, {"prepare_threshold": None}] * 2
    claimers = [
        threading.Thread(target=churn, args=(database_url, stop, errors, seed), kwargs=connect)
        for seed, connect in enumerate(settings)
    ]
    for thread in claimers:
        thread.start()
    rng = random.Random(7)
    miscounts = []
    try:
        wait_for(lambda: open_in(db, "q") > 0, timeout=30, message="claims began")
        for _ in range(40):
            set_limit(database_url, "q", None)
            time.sleep(rng.uniform(0, 0.03))
            set_limit(database_url, "q", rng.randint(2, 8))
            time.sleep(rng.uniform(0, 0.03))
            with db.transaction():  # no claim or end in between: the count must be exact
                db.execute("LOCK TABLE attempts IN SHARE MODE")
                limit, running = counter(db, "q")
                truth = open_in(db, "q")
            if running != truth:
                miscounts.append((limit, running, truth))
            if errors:
                break
    finally:
        stop.set()
        for thread in claimers:
            thread.join(60)
    assert not errors, errors
    assert not miscounts, f"(limit, counted, open) when they differ: {miscounts}"
    assert counter(db, "q")[1] == open_in(db, "q") == 0
    row = db.execute("SELECT count(*) FROM attempts").fetchone()
    assert row is not None and row[0] > 100, "too little churn to tell"


# --- a real cluster ---------------------------------------------------------------------------


def test_two_coordinators_never_run_more_of_a_limited_queue_than_its_limit(
    cluster_factory, tmp_path: Path
):
    cluster = cluster_factory(workers=0, coordinators=2)
    for name in ("w1", "w2", "w3"):
        cluster.start_worker(name, slots=4, extra_args=["--queues=default,reports"])
    limited = cluster.http.put("/queues/reports/limit", json={"max_running": 3})
    assert limited.status_code == 200, limited.text
    assert limited.json()["max_running"] == 3
    probe = OverlapProbe(tmp_path)
    tasks: list[dict[str, Any]] = [
        {"command": probe.command, "queue": "reports"} for _ in range(15)
    ]
    tasks += [{"command": "sleep 0.2"} for _ in range(10)]
    response = cluster.http.post("/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 201, response.text
    ids = response.json()["task_ids"]
    peak = 0

    def all_succeeded() -> bool:
        nonlocal peak
        with psycopg.connect(cluster.database_url) as conn:
            now = conn.execute(OPEN_IN_QUEUE, ("reports",)).fetchone()
            peak = max(peak, now[0] if now else 0)
            row = conn.execute(
                "SELECT count(*) FROM tasks WHERE status = 'succeeded' AND id = ANY(%s::uuid[])",
                (ids,),
            ).fetchone()
        return row is not None and row[0] == len(ids)

    wait_for(all_succeeded, timeout=120, interval=0.02, message="every task succeeded")
    seen = probe.seen()
    assert len(seen) == 15
    assert max(seen) <= 3, f"more than 3 ran at once: {seen}"
    assert max(seen) >= 2, f"the limit was never used: {seen}"  # the queue did run in parallel
    assert peak <= 3, f"{peak} attempts of the queue were open at once"
    view = {q["name"]: q for q in cluster.http.get("/queues").json()["queues"]}["reports"]
    assert (view["max_running"], view["running"]) == (3, 0)
    with psycopg.connect(cluster.database_url) as conn:
        assert counter(conn, "reports") == (3, 0)  # every claim counted, every end released


def test_a_lowered_limit_lets_running_tasks_finish_and_starts_none_until_under_it(
    cluster_factory, tmp_path: Path
):
    cluster = cluster_factory(workers=0, coordinators=2)
    for name in ("w1", "w2"):
        cluster.start_worker(name, slots=4, extra_args=["--queues=batch"])
    assert cluster.http.put("/queues/batch/limit", json={"max_running": 4}).status_code == 200
    running, release, starts = tmp_path / "running", tmp_path / "release", tmp_path / "starts"
    running.mkdir()
    # Held until `release` exists; the later ones note how many run as they start.
    held = f"until [ -e {release} ]; do sleep 0.05; done"
    counted = (
        f"touch {running}/$SKIPLOCK_TASK_ID; ls {running} | wc -l >> {starts}; sleep 0.2; "
        f"rm {running}/$SKIPLOCK_TASK_ID"
    )

    def queue() -> dict[str, Any]:
        listed = cluster.http.get("/queues").json()["queues"]
        found: dict[str, Any] = {q["name"]: q for q in listed}["batch"]
        return found

    first = cluster.http.post(
        "/tasks/batch", json={"tasks": [{"command": held, "queue": "batch"}] * 4}
    )
    assert first.status_code == 201, first.text
    wait_for(lambda: queue()["running"] == 4, timeout=30, message="4 tasks running")
    lowered = cluster.http.put("/queues/batch/limit", json={"max_running": 1})
    assert (lowered.json()["max_running"], lowered.json()["running"]) == (1, 4)
    later = cluster.http.post(
        "/tasks/batch", json={"tasks": [{"command": counted, "queue": "batch"}] * 4}
    ).json()["task_ids"]
    wait_for(
        lambda: (
            cluster.http.get(f"/tasks/{later[0]}").json()["waiting_for"]
            == "queue batch is at its limit of 1 running"
        ),
        timeout=30,
        message="a later task waiting for the limit",
    )
    time.sleep(1.0)  # room for a wrong start: none may come while 4 run over a limit of 1
    assert not starts.exists() and queue()["running"] == 4
    release.touch()

    def all_succeeded() -> bool:
        ids = first.json()["task_ids"] + later
        return all(cluster.http.get(f"/tasks/{i}").json()["status"] == "succeeded" for i in ids)

    wait_for(all_succeeded, timeout=60, message="every task succeeded")
    assert [int(n) for n in starts.read_text().split()] == [1, 1, 1, 1]  # one at a time
    assert (queue()["max_running"], queue()["running"]) == (1, 0)


# --- the HTTP API -----------------------------------------------------------------------------


def test_a_queue_limit_is_set_shown_and_lifted_and_bad_ones_are_refused(http, api):
    def row() -> tuple[Any, ...] | None:
        with psycopg.connect(api.database_url) as conn:
            return conn.execute(
                "SELECT paused, max_running, running FROM queues WHERE name = 'etl'"
            ).fetchone()

    refused: list[tuple[str, str, Any]] = [
        ("put", "/queues/etl/limit", {"max_running": 0}),
        ("put", "/queues/etl/limit", {"max_running": 100_001}),
        ("put", "/queues/etl/limit", {"max_running": "3"}),
        ("put", "/queues/etl/limit", {"max_running": 2.5}),
        ("put", "/queues/etl/limit", {}),
        ("put", "/queues/etl/limit", {"max_running": 3, "paused": True}),
        ("put", "/queues/etl/limit", [3]),
        ("put", "/queues/has%20space/limit", {"max_running": 3}),
        ("delete", "/queues/has%20space/limit", None),
    ]
    for method, path, body in refused:
        response = http.request(method, path, json=body)
        assert response.status_code == 422, (path, body, response.text)
        assert "detail" in response.json()
    assert row() is None  # nothing written
    task = http.post("/schedule", json={"command": "true", "queue": "etl"}).json()["task_id"]
    set_ = http.put("/queues/etl/limit", json={"max_running": 100_000})
    assert set_.status_code == 200, set_.text
    assert set_.json() == {
        "name": "etl", "paused": False, "max_running": 100_000, "queued": 1, "due": 1,
        "running": 0, "workers": 0, "waiting": 0,
    }  # fmt: skip
    listed = {q["name"]: q for q in http.get("/queues").json()["queues"]}
    assert listed["etl"]["max_running"] == 100_000
    assert listed.get("default", {}).get("max_running") is None
    assert http.put("/queues/etl/limit", json={"max_running": 1}).json()["max_running"] == 1
    # A queue at its limit says so on its tasks (no coordinator runs here: set the count).
    with psycopg.connect(api.database_url) as conn:
        conn.execute("UPDATE queues SET running = 1 WHERE name = 'etl'")
    waiting = http.get(f"/tasks/{task}").json()["waiting_for"]
    assert waiting == "queue etl is at its limit of 1 running"
    assert http.post("/queues/etl/pause").json()["max_running"] == 1
    lifted = http.delete("/queues/etl/limit")
    assert lifted.status_code == 200 and lifted.json()["max_running"] is None
    assert row() == (True, None, 0)
    never = http.delete("/queues/never-limited/limit")  # a queue nothing names yet: listed
    assert never.status_code == 200 and never.json()["max_running"] is None
    assert http.put("/queues/etl/limit", json={"max_running": None}).json()["max_running"] is None


def test_a_first_limit_that_cannot_lock_the_attempts_in_time_changes_nothing(http, api):
    with psycopg.connect(api.database_url) as holder:
        # An attempt being written the whole time: as a claim or an end that never commits.
        holder.execute("LOCK TABLE attempts IN ROW EXCLUSIVE MODE")
        response = http.put("/queues/stuck/limit", json={"max_running": 2}, timeout=30)
        assert response.status_code == 503, response.text
        assert "detail" in response.json()
    with psycopg.connect(api.database_url) as conn:
        assert conn.execute("SELECT * FROM queues WHERE name = 'stuck'").fetchone() is None
    assert http.put("/queues/stuck/limit", json={"max_running": 2}).status_code == 200
