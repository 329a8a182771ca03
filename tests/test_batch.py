"""POST /tasks/batch on a real scheduler process and database (no coordinator runs, so tasks stay
queued): all or nothing, ids in order, every bad item named, idempotency keys honoured."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg

from devtools.cluster import Cluster, wait_for
from scheduler_svc.api_models import ScheduleRequest
from scheduler_svc.routes.tasks import new_ids, request_fingerprint


def count_tasks(api: Cluster) -> int:
    with psycopg.connect(api.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM tasks").fetchone()
    assert row is not None
    return int(row[0])


def submit(http: httpx.Client, tasks: list[dict[str, Any]]) -> httpx.Response:
    return http.post("/tasks/batch", json={"tasks": tasks}, timeout=60)


def issues_at(response: httpx.Response) -> dict[int, str]:
    """Item index -> what the 422 says about it."""
    assert response.status_code == 422, response.text[:500]
    found: dict[int, str] = {}
    for issue in response.json()["detail"]:
        loc = issue["loc"]
        assert loc[:2] == ["body", "tasks"], issue
        found[loc[2]] = found.get(loc[2], "") + json.dumps(issue)
    return found


def test_a_batch_is_written_in_order_with_every_field(http, api):
    tasks: list[dict[str, Any]] = [
        {"command": "echo a"},
        {"command": "echo b", "delay_seconds": 600, "max_retries": 3, "timeout_seconds": 2.5},
        {"command": "echo c", "scheduled_at": "2030-01-02T03:04:05Z", "retry_backoff_seconds": 7},
    ]
    response = submit(http, tasks)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["created"] == 3
    ids = answer["task_ids"]
    assert len(set(ids)) == 3
    details = [http.get(f"/tasks/{task_id}").json() for task_id in ids]
    assert [d["command"] for d in details] == ["echo a", "echo b", "echo c"]
    assert all(d["status"] == "queued" for d in details)
    assert details[1]["max_retries"] == 3 and details[1]["timeout_seconds"] == 2.5
    assert details[2]["scheduled_at"] == "2030-01-02T03:04:05Z"
    assert details[2]["retry_backoff_seconds"] == 7
    with psycopg.connect(api.database_url) as conn:
        row = conn.execute(
            "SELECT scheduled_at - created_at FROM tasks WHERE id = %s", (ids[1],)
        ).fetchone()
    assert row is not None and 599 <= row[0].total_seconds() <= 601


def test_every_bad_item_is_named_and_nothing_is_written(http, api):
    before = count_tasks(api)
    tasks: list[dict[str, Any]] = [
        {"command": "echo fine"},
        {"command": " "},
        {"command": "echo fine"},
        {"command": "echo x", "delay_seconds": 1, "scheduled_at": "2030-01-01T00:00:00Z"},
        {"command": "echo x", "max_retries": 101, "colour": "red"},
        {"command": "echo x", "idempotency_key": ""},
    ]
    found = issues_at(submit(http, tasks))
    assert set(found) == {1, 3, 4, 5}
    assert "blank" in found[1]
    assert "not both" in found[3]
    assert "max_retries" in found[4] and "colour" in found[4]
    assert "idempotency_key" in found[5]
    assert count_tasks(api) == before


def test_a_key_repeated_within_a_batch_is_refused(http, api):
    before = count_tasks(api)
    tasks = [{"command": f"echo {i}", "idempotency_key": "twice"} for i in range(3)]
    found = issues_at(submit(http, tasks))
    assert set(found) == {1, 2}
    assert "repeats the idempotency_key of task 0" in found[2]
    assert count_tasks(api) == before


def test_empty_and_oversized_batches_are_refused(http, api):
    before = count_tasks(api)
    bodies: list[Any] = [{"tasks": []}, {"tasks": [{"command": "x"}] * 10_001}, {}, []]
    for body in bodies:
        response = http.post("/tasks/batch", json=body, timeout=60)
        assert response.status_code == 422, response.text[:300]
        assert response.json()["detail"]
    assert count_tasks(api) == before


def test_ten_thousand_tasks_beyond_a_single_request_body_limit(http, api):
    before = count_tasks(api)
    tasks = [{"command": f"echo {i} " + "x" * 200} for i in range(10_000)]  # about 2.3 MB
    response = submit(http, tasks)
    assert response.status_code == 201, response.text[:300]
    ids = response.json()["task_ids"]
    assert response.json()["created"] == 10_000 and len(set(ids)) == 10_000
    assert count_tasks(api) == before + 10_000
    with psycopg.connect(api.database_url) as conn:
        rows = conn.execute(
            "SELECT id, command FROM tasks WHERE id = ANY(%s)", ([ids[0], ids[4321], ids[-1]],)
        ).fetchall()
    commands = {str(task_id): command.split()[1] for task_id, command in rows}
    assert commands == {ids[0]: "0", ids[4321]: "4321", ids[-1]: "9999"}


def test_a_replayed_batch_answers_the_same_ids(http, api):
    prefix = uuid.uuid4().hex
    tasks = [{"command": f"echo {i}", "idempotency_key": f"{prefix}-{i}"} for i in range(5)]
    first = submit(http, tasks)
    assert first.status_code == 201 and first.json()["created"] == 5
    before = count_tasks(api)
    again = submit(http, tasks)
    assert again.status_code == 200, again.text
    assert again.json() == {"task_ids": first.json()["task_ids"], "created": 0}
    # Old and new together: the old keep their ids, the new are written.
    mixed = submit(http, [{"command": "echo new"}, *tasks[:2]])
    assert mixed.status_code == 201
    assert mixed.json()["created"] == 1
    assert mixed.json()["task_ids"][1:] == first.json()["task_ids"][:2]
    assert count_tasks(api) == before + 1


def test_a_key_from_post_schedule_is_honoured_in_a_batch(http):
    key = uuid.uuid4().hex
    single = http.post("/schedule", json={"command": "echo one"}, headers={"Idempotency-Key": key})
    assert single.status_code == 201
    batch = submit(http, [{"command": "echo one", "idempotency_key": key}])
    assert batch.status_code == 200
    assert batch.json()["task_ids"] == [single.json()["task_id"]]


def test_a_key_reused_for_another_task_refuses_the_whole_batch(http, api):
    key = uuid.uuid4().hex
    assert submit(http, [{"command": "echo one", "idempotency_key": key}]).status_code == 201
    before = count_tasks(api)
    response = submit(
        http, [{"command": "echo new"}, {"command": "echo two", "idempotency_key": key}]
    )
    assert response.status_code == 409, response.text
    assert "tasks [1]" in response.json()["detail"]
    assert count_tasks(api) == before


def test_the_batch_path_is_not_taken_for_a_task_id(http):
    for method in ("GET", "DELETE", "OPTIONS"):
        response = http.request(method, "/tasks/batch")
        assert response.status_code == 405, response.text
        assert response.headers["allow"] == "POST"
        assert response.json()["detail"]
    assert http.request("PATCH", "/schedules/preview").headers["allow"] == "GET"


def test_every_task_of_a_batch_has_its_event(http, api):
    tasks = [{"command": f"echo {i}", "delay_seconds": i} for i in range(50)]
    response = submit(http, tasks)
    assert response.status_code == 201, response.text
    ids = response.json()["task_ids"]
    with psycopg.connect(api.database_url) as conn:
        rows = conn.execute(
            "SELECT e.task_id::text, e.data, t.scheduled_at - t.created_at FROM events e"
            " JOIN tasks t ON t.id = e.task_id WHERE e.kind = 'task' AND e.task_id = ANY(%s)",
            (ids,),
        ).fetchall()
    assert sorted(task_id for task_id, _, _ in rows) == sorted(ids)
    assert all(data["status"] == "queued" and data["attempt"] == 0 for _, data, _ in rows)
    delays = {task_id: delay.total_seconds() for task_id, _, delay in rows}
    assert [round(delays[task_id]) for task_id in ids] == list(range(50))


def test_a_key_taken_while_the_batch_is_written_gives_the_earlier_task(http, api):
    """Another transaction holds a new task with the same key when the batch looks the keys up;
    it commits while the batch waits on it: the batch is written again and answers its id."""
    key = uuid.uuid4().hex
    held_id = uuid.uuid4()
    fingerprint = request_fingerprint(ScheduleRequest.model_validate({"command": "echo raced"}))
    before = count_tasks(api)
    with psycopg.connect(api.database_url) as holder:
        holder.execute(
            "INSERT INTO tasks (id, command, scheduled_at, run_at, idempotency_key, request_hash)"
            " VALUES (%s, 'echo raced', now(), now(), %s, %s)",
            (held_id, key, fingerprint),
        )
        with ThreadPoolExecutor(1) as pool:
            batch = [{"command": "echo other"}, {"command": "echo raced", "idempotency_key": key}]
            answer = pool.submit(submit, http, batch)

            def batch_waits_on_the_key() -> bool:
                with psycopg.connect(api.database_url) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database() AND query LIKE 'COPY tasks%%'"
                    ).fetchone()
                return row is not None and row[0] == 1

            wait_for(batch_waits_on_the_key, timeout=30, message="the batch waiting on the key")
            holder.commit()
            response = answer.result(timeout=60)
    assert response.status_code == 201, response.text
    assert response.json()["created"] == 1
    assert response.json()["task_ids"][1] == str(held_id)
    assert count_tasks(api) == before + 2


def test_new_ids_are_distinct_version_4_uuids_in_text_form():
    texts = new_ids(1000)
    ids = [uuid.UUID(text) for text in texts]
    assert [str(task_id) for task_id in ids] == texts
    assert len(set(ids)) == 1000
    assert {task_id.version for task_id in ids} == {4}
    assert {task_id.variant for task_id in ids} == {uuid.RFC_4122}
    # every digit of the variant group occurs: its two free bits are random
    assert {text[19] for text in texts} == set("89ab")


def test_times_keep_their_microseconds(http):
    tasks: list[dict[str, Any]] = [
        {"command": "echo at", "scheduled_at": "2030-01-02T03:04:05.123456+02:00"},
        {"command": "echo in", "delay_seconds": 0.000001},
        {"command": "echo now"},
    ]
    response = submit(http, tasks)
    assert response.status_code == 201, response.text
    details = [http.get(f"/tasks/{task_id}").json() for task_id in response.json()["task_ids"]]
    assert details[0]["scheduled_at"] == "2030-01-02T01:04:05.123456Z"
    assert details[0]["run_at"] == details[0]["scheduled_at"]
    now = datetime.fromisoformat(details[2]["scheduled_at"])
    assert datetime.fromisoformat(details[1]["scheduled_at"]) - now == timedelta(microseconds=1)
    assert details[2]["run_at"] == details[2]["scheduled_at"]


def test_request_fingerprints_stay_those_stored_by_earlier_releases():
    """Digests computed by the release before batch COPY: a task made then is still replayed."""
    bodies = {
        "e64a648619eb1d46cfb68cefed1ff5a078e7b44888ccf4e5dab323bf18d6c0b1": {
            "command": "echo é", "delay_seconds": 1.5, "max_retries": 2,
        },
        "8ef16bbd0b6a1f0cae9653fac4798798d60f17f608f3c4c0a3e2fe94957c648a": {
            "command": "echo x", "priority": 3, "labels": {"b": "1", "a": "2"},
            "env": {"Z": "z", "A": "a"},
        },
    }  # fmt: skip
    for digest, body in bodies.items():
        assert request_fingerprint(ScheduleRequest.model_validate(body)) == digest
