"""GET /tasks (by ids, or page by page) and the scheduler's group-commit inserts, against a real
scheduler process and database. No coordinator runs, so every task stays queued."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
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
        ({"before": "nope"}, "before is not a cursor"),
        ({"cursor": "bm9wZQ"}, "cursor is not a cursor"),
        ({"schedule_id": "nope"}, "is not a UUID"),
        ({"created_after": "yesterday"}, "RFC 3339"),
        ({"finished_before": "2026-01-02T03:04:05"}, "UTC offset"),
        ({"command_prefix": "a\x00b"}, "NUL"),
        ({"worker_id": ""}, "worker_id"),
        ({"id": str(uuid.uuid4()), "status": "queued"}, "takes no filters"),
        ({"cursor": "x", "before": "y"}, "not both"),
        ({"stauts": "queued"}, "stauts"),
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


def ids_of(api: Cluster, **params: Any) -> list[str]:
    """Every task the listing shows for `params`, following cursors page by page."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = api.http.get("/tasks", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [t["task_id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_filters_narrow_the_listing_and_cursors_page_through_it(api: Cluster) -> None:
    tag = uuid.uuid4().hex[:8]
    later = [submit(api.http, f"echo {tag} later {i}", delay_seconds=3600) for i in range(3)]
    now = [submit(api.http, f"echo {tag} now {i}") for i in range(4)]
    with psycopg.connect(api.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'failed', failed_at = now(), completed_at = now(),"
            " worker_id = 'w-filter', attempt = 1 WHERE id = %s",
            (now[1]["task_id"],),
        )
        (boundary,) = conn.execute(
            "SELECT created_at FROM tasks WHERE id = %s", (now[0]["task_id"],)
        ).fetchone() or (None,)
    prefix = f"echo {tag} "
    mine = ids_of(api, command_prefix=prefix, limit=2)
    assert mine == [t["task_id"] for t in reversed(later + now)]
    assert ids_of(api, command_prefix=f"echo {tag} later", limit=2) == [
        t["task_id"] for t in reversed(later)
    ]
    assert ids_of(api, command_prefix=prefix, status=["failed", "cancelled"]) == [now[1]["task_id"]]
    assert ids_of(api, command_prefix=prefix, worker_id="w-filter") == [now[1]["task_id"]]
    elsewhere = submit(api.http, f"echo {tag}-gpu", queue=f"gpu-{tag}")
    assert ids_of(api, queue=f"gpu-{tag}") == [elsewhere["task_id"]]
    assert ids_of(api, command_prefix=f"echo {tag}-gpu", queue="default") == []
    soon = datetime.now(UTC) + timedelta(minutes=5)
    due = ids_of(api, command_prefix=prefix, scheduled_before=soon.isoformat())
    assert set(due) == {t["task_id"] for t in now}
    assert set(ids_of(api, command_prefix=prefix, scheduled_after=soon.isoformat())) == {
        t["task_id"] for t in later
    }
    assert boundary is not None
    since = ids_of(api, command_prefix=prefix, created_after=boundary.isoformat())
    assert since == [t["task_id"] for t in reversed(now)]
    before = ids_of(api, command_prefix=prefix, created_before=boundary.isoformat())
    assert before == [t["task_id"] for t in reversed(later)]
    finished = ids_of(
        api,
        command_prefix=prefix,
        finished_after=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    )
    assert finished == [now[1]["task_id"]]
    schedule = str(uuid.uuid4())
    assert ids_of(api, schedule_id=schedule) == []


def test_a_cursor_is_stable_while_tasks_are_added(api: Cluster) -> None:
    tag = uuid.uuid4().hex[:8]
    first = [submit(api.http, f"echo {tag} {i}")["task_id"] for i in range(5)]
    page = api.http.get("/tasks", params={"command_prefix": f"echo {tag}", "limit": 2}).json()
    assert [t["task_id"] for t in page["tasks"]] == first[:-3:-1]
    for i in range(3):
        submit(api.http, f"echo {tag} added {i}")
    rest = ids_of(api, command_prefix=f"echo {tag}", limit=2, cursor=page["next_cursor"])
    # The pages after the first go on where it ended; added tasks are newer, not in them.
    assert rest == list(reversed(first[:3]))
    # A cursor passed as `before`, as older clients do, means the same.
    legacy = api.http.get(
        "/tasks", params={"command_prefix": f"echo {tag}", "before": page["next_cursor"]}
    ).json()
    assert [t["task_id"] for t in legacy["tasks"]] == rest


def test_an_unknown_query_parameter_is_named_on_every_endpoint(api: Cluster) -> None:
    task = submit(api.http, "echo typo")
    for path in ("/tasks", f"/tasks/{task['task_id']}", "/stats", "/workers", "/schedules"):
        response = api.http.get(path, params={"statsu": "failed"})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "statsu"], path
    assert api.http.get("/status", params={"task_id": task["task_id"]}).status_code == 200
    assert api.http.get("/healthz", params={"verbose": "1"}).status_code == 422


def test_a_literal_path_is_its_own_route_for_every_method(api: Cluster) -> None:
    response = api.http.patch("/schedules/preview", params={"cron": "0 * * * *"}, json={})
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET"
