"""POST /schedule answers a plain submission (JSON body, no query, no Idempotency-Key) without
FastAPI's dependency solving, and writes the same task as FastAPI's usual path would; every
other request takes the usual path. In process, against real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.dependencies.utils import solve_dependencies
from fastapi.testclient import TestClient

from scheduler_svc import config as scheduler_config
from scheduler_svc.app import create_app
from scheduler_svc.errors import json_bodies_only, no_unknown_query_parameters

# Taken by the usual path only: +json passes json_bodies_only but is not the plain type.
USUAL_JSON = "application/vnd.skiplock+json"
BODIES: list[dict[str, Any]] = [
    {"command": "echo hi"},
    {"command": "echo later", "delay_seconds": 2.5, "max_retries": 3, "priority": 7},
    {"command": "echo at", "scheduled_at": "2030-01-02T03:04:05.678+02:00", "queue": "q1"},
    {
        "command": "echo all",
        "labels": {"team": "a"},
        "env": {"A": "1"},
        "cwd": "/tmp",
        "success_exit_codes": [0, 3],
        "timeout_seconds": 9,
        "after": [],
    },
]
# What a request may not decide: the task's id and the instants the database gives it.
OWN_COLUMNS = {"id", "scheduled_at", "run_at", "created_at", "updated_at"}


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    app = create_app(scheduler_config.load([], {"DATABASE_URL": database_url}))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def solves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times FastAPI solved a route's dependencies, counted around its own function."""
    counted: list[int] = []

    async def counting(*args: Any, **kwargs: Any) -> Any:
        counted.append(1)
        return await solve_dependencies(*args, **kwargs)

    # The name fastapi.routing's request handler calls it by.
    monkeypatch.setattr("fastapi.routing.solve_dependencies", counting)
    return counted


def stored(database_url: str, task_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute("SELECT * FROM tasks WHERE id = %s", [task_id]).fetchone()
    assert row is not None
    return {k: v for k, v in row.items() if k not in OWN_COLUMNS}


def test_a_plain_submission_skips_dependency_solving(client, solves):
    for content_type in ("application/json", "Application/JSON; charset=utf-8"):
        answer = client.post(
            "/schedule", content=b'{"command": "echo hi"}', headers={"content-type": content_type}
        )
        assert answer.status_code == 201, answer.text
    assert solves == []


@pytest.mark.parametrize(
    "path, headers, body, status",
    [
        ("/schedule?x=1", {}, b'{"command": "echo hi"}', 422),
        ("/schedule", {"idempotency-key": "k1"}, b'{"command": "echo hi"}', 201),
        ("/schedule", {"content-type": USUAL_JSON}, b'{"command": "echo hi"}', 201),
        ("/schedule", {"content-type": "text/plain"}, b'{"command": "echo hi"}', 415),
        ("/schedule", {}, b"", 422),
        ("/schedule", {}, b'{"command": ""}', 422),
    ],
)
def test_every_other_request_takes_the_usual_path(client, solves, path, headers, body, status):
    answer = client.post(
        path, content=body, headers={"content-type": "application/json", **headers}
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert "detail" in answer.json() or status == 201
    assert solves


def test_a_body_that_is_not_json_is_answered_as_before(client):
    answer = client.post(
        "/schedule", content=b'{"command": ', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json() == {
        "detail": [{"loc": ["body", 12], "msg": "JSON decode error", "type": "json_invalid"}]
    }


def test_an_error_of_the_endpoint_is_answered_as_before(client, solves):
    """A body that validates reaches the endpoint on the plain path; what it refuses is
    answered by the app's handlers all the same."""
    answer = client.post("/schedule", json={"command": "echo", "after": [0]})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "after", 0]
    assert solves == []


def test_both_paths_write_and_answer_the_same(client, database_url, solves):
    for body in BODIES:
        plain = client.post("/schedule", json=body)
        usual = client.post("/schedule", json=body, headers={"content-type": USUAL_JSON})
        assert plain.status_code == usual.status_code == 201, (plain.text, usual.text)
        mine, theirs = plain.json(), usual.json()
        assert mine.keys() == theirs.keys()
        assert {k: v for k, v in mine.items() if k not in {"task_id", "scheduled_at"}} == {
            k: v for k, v in theirs.items() if k not in {"task_id", "scheduled_at"}
        }
        assert stored(database_url, mine["task_id"]) == stored(database_url, theirs["task_id"])
    assert len(solves) == len(BODIES)


def test_the_plain_path_knows_every_dependency_of_the_app():
    """PlainSubmitRoute checks what these pass (scheduler_svc/routes/tasks.py
    plain_submission): a new app-wide dependency must be taught to it as well."""
    app = create_app(scheduler_config.load([], {}))
    assert [d.dependency for d in app.router.dependencies] == [
        json_bodies_only,
        no_unknown_query_parameters,
    ]
