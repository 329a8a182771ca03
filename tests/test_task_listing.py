"""GET /tasks (by ids, or page by page) and the scheduler's group-commit inserts, against a real
scheduler process and database. No coordinator runs, so every task stays queued."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from devtools.cluster import Cluster


def submit(http: httpx.Client, command: str, **extra: Any) -> dict[str, Any]:
    response = http.post("/schedule", json={"command": command, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_concurrent_submissions_each_get_their_own_committed_task(api: Cluster) -> None:
    commands = [f"echo burst {i}" for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda c: submit(api.http, c, delay_seconds=3600), commands))
    assert [a["command"] for a in answers] == commands
    ids = [a["task_id"] for a in answers]
    assert len(set(ids)) == len(ids)
    with psycopg.connect(api.database_url) as conn:
        rows: dict[str, str] = dict(
            conn.execute(
                "SELECT id::text, command FROM tasks WHERE id = ANY(%s::uuid[])", (ids,)
            ).fetchall()
        )
    assert rows == dict(zip(ids, commands, strict=True))


def test_tasks_by_id_leaves_unknown_ids_out(api: Cluster) -> None:
    first = submit(api.http, "echo one")
    second = submit(api.http, "echo two", delay_seconds=60)
    unknown = str(uuid.uuid4())
    response = api.http.get(
        "/tasks", params=[("id", first["task_id"]), ("id", second["task_id"]), ("id", unknown)]
    )
    assert response.status_code == 200, response.text
    found = {t["task_id"]: t for t in response.json()["tasks"]}
    assert set(found) == {first["task_id"], second["task_id"]}
    assert found[second["task_id"]] == second


def test_pages_go_newest_first_and_filter_by_status(api: Cluster) -> None:
    mine = [submit(api.http, f"echo page {i}")["task_id"] for i in range(5)]
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'cancelled', cancelled_at = now(), completed_at = now()"
            " WHERE id = %s",
            (mine[2],),
        )
    seen: list[str] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"before": before} if before else {})
        page = api.http.get("/tasks", params=params).json()
        seen += [t["task_id"] for t in page["tasks"]]
        before = page["next_cursor"]
        if before is None:
            break
    assert len(seen) == len(set(seen))
    newest_first = [s for s in seen if s in mine]
    assert newest_first == list(reversed(mine))

    cancelled = api.http.get("/tasks", params={"status": "cancelled"}).json()["tasks"]
    assert [t["task_id"] for t in cancelled] == [mine[2]]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"id": "not-a-uuid"}, "is not a UUID"),
        ({"before": "nope"}, "is not a UUID"),
        ({"status": "sleeping"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ([("id", str(uuid.uuid4())) for _ in range(501)], "id"),
    ],
)
def test_bad_listing_queries_get_a_422_saying_what_is_wrong(
    api: Cluster, params: Any, says: str
) -> None:
    response = api.http.get("/tasks", params=params)
    assert response.status_code == 422, response.text
    assert says in response.text
