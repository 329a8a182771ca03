"""The schedule API against a real scheduler process and a real database (no coordinator runs
here, so runs stay queued and ticks are only those a test fires itself)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from devtools.cluster import Cluster
from tests.support.schedules import fire


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"name": unique(), "cron": "*/5 * * * *", "command": "echo hi"} | fields
    response = http.post("/schedules", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_create_answers_the_schedule_and_its_next_five_fire_times(http):
    body = create(
        http,
        cron="0 9 * * MON-FRI",
        timezone="America/New_York",
        overlap="allow",
        catchup_window_seconds=120,
        timeout_seconds=30,
        max_retries=2,
        jitter_seconds=1.5,
    )
    assert body["cron"] == "0 9 * * MON-FRI"
    assert body["timezone"] == "America/New_York"
    assert body["overlap"] == "allow"
    assert (body["catchup_window_seconds"], body["timeout_seconds"]) == (120, 30)
    assert (body["max_retries"], body["jitter_seconds"], body["paused"]) == (2, 1.5, False)
    fires = body["next_fire_times"]
    assert len(fires) == 5
    created = utc(body["created_at"])
    previous = created
    for fire_time in fires:
        at = utc(fire_time["utc"])
        local = datetime.fromisoformat(fire_time["local"])
        assert at > previous and local == at  # the same instant, written in New York time
        assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
        assert local.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
        previous = at


def test_defaults(http):
    body = create(http)
    assert body["timezone"] == "UTC"
    assert body["overlap"] == "skip"
    assert body["catchup_window_seconds"] == 60
    assert body["jitter_seconds"] == 0
    assert body["timeout_seconds"] is None
    assert body["max_retries"] == 0


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"cron": "61 * * * *"}, "minute' value 61 out of range 0-59"),
        ({"cron": "* * * *"}, "needs 5 fields"),
        ({"cron": "@fortnightly"}, "unknown macro"),
        ({"cron": "@every 0s"}, "at least 1s"),
        ({"cron": "@every soon"}, "@every needs a duration"),
        ({"cron": "0 0 30 2 *"}, "can never fire"),
        ({"cron": "5-1 * * * *"}, "runs backwards"),
        ({"cron": "* * * FOO *"}, "not a number 1-12 or a name JAN-DEC"),
        ({"cron": ""}, "at least 1 character"),
        ({"cron": "*" * 300}, "at most 200 characters"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"timezone": ""}, "at least 1 character"),
        ({"overlap": "sometimes"}, "'allow', 'skip' or 'cancel_previous'"),
        ({"catchup_window_seconds": 0}, "greater than or equal to 1"),
        ({"catchup_window_seconds": 1.5}, "valid integer"),
        ({"jitter_seconds": -1}, "greater than or equal to 0"),
        ({"timeout_seconds": 0}, "greater than or equal to 0.001"),
        ({"max_retries": 1000}, "less than or equal to 100"),
        ({"paused": "yes"}, "valid boolean"),
        ({"command": "   "}, "must not be empty or blank"),
        ({"name": ""}, "at least 1 character"),
        ({"name": "a\nb"}, "control characters"),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_schedules_get_422_saying_what_is_wrong(http, fields, says):
    body = {"name": unique(), "cron": "*/5 * * * *", "command": "true"} | fields
    response = http.post("/schedules", json=body)
    assert response.status_code == 422, response.text
    assert says in response.text


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"name": 1}', b'{"name": "x", "cron": null, "command": "y"}'],
)
def test_malformed_bodies_get_4xx_json(http, raw):
    response = http.post("/schedules", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert "detail" in response.json()


def test_duplicate_name_is_409_and_a_deleted_name_can_be_reused(http):
    first = create(http, name=unique("dup"))
    response = http.post(
        "/schedules", json={"name": first["name"], "cron": "@daily", "command": "true"}
    )
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]
    assert http.delete(f"/schedules/{first['id']}").status_code == 204
    again = create(http, name=first["name"])
    assert again["id"] != first["id"]


def test_get_patch_and_delete(http):
    body = create(http, cron="@every 90s")
    sid = body["id"]
    got = http.get(f"/schedules/{sid}").json()
    assert got["name"] == body["name"]
    assert got["next_fire_times"] == body["next_fire_times"]  # @every: anchored at creation

    patched = http.patch(
        f"/schedules/{sid}",
        json={"cron": "30 4 * * *", "timezone": "Europe/London", "timeout_seconds": 5},
    )
    assert patched.status_code == 200, patched.text
    view = patched.json()
    assert (view["cron"], view["timezone"], view["timeout_seconds"]) == (
        "30 4 * * *",
        "Europe/London",
        5,
    )
    assert all(f["local"][11:16] == "04:30" for f in view["next_fire_times"])
    assert view["command"] == body["command"]  # untouched

    cleared = http.patch(f"/schedules/{sid}", json={"timeout_seconds": None}).json()
    assert cleared["timeout_seconds"] is None

    for bad, says in [
        ({"cron": "99 * * * *"}, "out of range"),
        ({"timezone": "Nowhere/Land"}, "unknown time zone"),
        ({"command": None}, "cannot be null: command"),
        ({"overlap": "never"}, "cancel_previous"),
        ({"id": "x"}, "Extra inputs"),
    ]:
        response = http.patch(f"/schedules/{sid}", json=bad)
        assert response.status_code == 422, (bad, response.text)
        assert says in response.text
    assert http.get(f"/schedules/{sid}").json()["cron"] == "30 4 * * *"

    other = create(http)
    taken = http.patch(f"/schedules/{other['id']}", json={"name": body["name"]})
    assert taken.status_code == 409

    assert http.delete(f"/schedules/{sid}").status_code == 204
    for method, path in [
        ("GET", f"/schedules/{sid}"),
        ("PATCH", f"/schedules/{sid}"),
        ("DELETE", f"/schedules/{sid}"),
        ("POST", f"/schedules/{sid}/pause"),
        ("POST", f"/schedules/{sid}/trigger"),
        ("GET", f"/schedules/{sid}/preview"),
        ("GET", f"/schedules/{sid}/ticks"),
    ]:
        response = http.request(method, path, json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path, response.text)


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1234", "' OR 1=1 --"])
def test_malformed_ids_get_422(http, bad_id):
    for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/resume"), ("GET", "/ticks")]:
        response = http.request(method, f"/schedules/{bad_id}{suffix}")
        assert response.status_code == 422, response.text
        assert "not a UUID" in response.text


def test_list_filters_by_prefix_and_paused_and_paginates(http):
    prefix = unique("list")
    names = [f"{prefix}-{i:02d}" for i in range(7)]
    for i, name in enumerate(names):
        create(http, name=name, paused=i % 3 == 0)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"name_prefix": prefix, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/schedules", params=params).json()
        seen += [s["name"] for s in page["schedules"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3
    paused = http.get("/schedules", params={"name_prefix": prefix, "paused": "true"}).json()
    assert [s["name"] for s in paused["schedules"]] == [names[0], names[3], names[6]]
    active = http.get("/schedules", params={"name_prefix": prefix, "paused": "false"}).json()
    assert len(active["schedules"]) == 4
    bad_params: list[dict[str, Any]] = [
        {"limit": 0},
        {"limit": 10_000},
        {"paused": "maybe"},
        {"cursor": ""},
        {"name_prefix": "\x00"},
        {"cursor": "a\x00"},
    ]
    for bad in bad_params:
        assert http.get("/schedules", params=bad).status_code == 422


def test_pause_and_resume(http):
    body = create(http)
    paused = http.post(f"/schedules/{body['id']}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    resumed = http.post(f"/schedules/{body['id']}/resume").json()
    assert resumed["paused"] is False
    assert resumed["active_from"] > body["active_from"]
    again = http.post(f"/schedules/{body['id']}/resume").json()
    assert again["active_from"] == resumed["active_from"]  # resuming a running one is a no-op


def test_preview_lists_the_next_n_fire_times_in_utc_and_local_time(http):
    body = create(http, cron="0 2 * * *", timezone="Europe/London")
    preview = http.get(f"/schedules/{body['id']}/preview", params={"count": 40})
    assert preview.status_code == 200
    fires = preview.json()["fire_times"]
    assert len(fires) == 40
    instants = [utc(f["utc"]) for f in fires]
    assert instants == sorted(set(instants))
    assert all(f["local"][11:16] == "02:00" for f in fires)
    assert fires[:5] == body["next_fire_times"]
    for count in (0, 1001, "many"):
        response = http.get(f"/schedules/{body['id']}/preview", params={"count": count})
        assert response.status_code == 422


def test_an_unsaved_expression_is_previewed_with_the_errors_a_create_would_give(http):
    preview = http.get(
        "/schedules/preview", params={"cron": "30 1 * * *", "timezone": "America/New_York"}
    )
    assert preview.status_code == 200, preview.text
    fires = preview.json()["fire_times"]
    assert len(fires) == 10 and all(f["local"][11:16] == "01:30" for f in fires)
    instants = [utc(f["utc"]) for f in fires]
    assert instants == sorted(set(instants)) and instants[0] > datetime.now(UTC)
    hourly = http.get("/schedules/preview", params={"cron": "@hourly", "count": 3}).json()
    assert len(hourly["fire_times"]) == 3
    bad_cron = http.get("/schedules/preview", params={"cron": "61 * * * *"})
    assert bad_cron.status_code == 422 and bad_cron.json()["detail"][0]["loc"] == ["query", "cron"]
    bad_zone = http.get("/schedules/preview", params={"cron": "* * * * *", "timezone": "Mars/Base"})
    assert bad_zone.status_code == 422
    assert bad_zone.json()["detail"][0]["loc"] == ["query", "timezone"]
    assert http.get("/schedules/preview").status_code == 422  # no expression
    assert (
        http.get("/schedules/preview", params={"cron": "* * * * *", "count": 0}).status_code == 422
    )


def test_ticks_are_listed_newest_first_and_paginated(api, http):
    body = create(http, cron="* * * * * *", catchup_window_seconds=5, overlap="allow")
    created = utc(body["created_at"])
    # Play the coordinators' part with a clock 12 s after creation.
    fire(api.database_url, created + timedelta(seconds=12))
    fire_times: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = http.get(f"/schedules/{body['id']}/ticks", params=params).json()
        fire_times += [t["fire_time"] for t in page["ticks"]]
        for tick in page["ticks"]:
            assert tick["outcome"] in ("missed", "started")
            assert (tick["task_id"] is None) == (tick["outcome"] == "missed")
            assert tick["task_status"] == (None if tick["outcome"] == "missed" else "queued")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(fire_times) == 12
    assert [utc(t) for t in fire_times] == sorted((utc(t) for t in fire_times), reverse=True)
    bad = http.get(f"/schedules/{body['id']}/ticks", params={"cursor": "yesterday"})
    assert bad.status_code == 422 and "RFC 3339" in bad.text


def unfinished_runs(api: Cluster, schedule_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(api.database_url) as conn:
        return conn.execute(
            "SELECT id, fire_time FROM tasks WHERE schedule_id = %s"
            " AND status IN ('queued', 'dispatched', 'running')",
            (schedule_id,),
        ).fetchall()


def test_trigger_runs_now_under_the_overlap_policy(api, http):
    skip = create(http, overlap="skip", paused=True)
    first = http.post(f"/schedules/{skip['id']}/trigger")
    assert first.status_code == 201, first.text
    task = first.json()["task"]
    assert task["status"] == "queued"
    assert http.get("/status", params={"task_id": task["task_id"]}).json()["command"] == "echo hi"
    second = http.post(f"/schedules/{skip['id']}/trigger")
    assert second.status_code == 409 and "has not finished" in second.text
    assert len(unfinished_runs(api, skip["id"])) == 1

    cancel = create(http, overlap="cancel_previous")
    old = http.post(f"/schedules/{cancel['id']}/trigger").json()["task"]["task_id"]
    new = http.post(f"/schedules/{cancel['id']}/trigger").json()
    assert new["cancelled_task_ids"] == [old]
    assert http.get("/status", params={"task_id": old}).json()["status"] == "cancelled"
    assert [str(r[0]) for r in unfinished_runs(api, cancel["id"])] == [new["task"]["task_id"]]

    allow = create(http, overlap="allow")
    for _ in range(3):
        assert http.post(f"/schedules/{allow['id']}/trigger").status_code == 201
    runs = unfinished_runs(api, allow["id"])
    assert len(runs) == 3 and all(fire_time is None for _, fire_time in runs)


def test_retrying_a_failed_run_while_another_is_unfinished_is_409(api, http):
    body = create(http, overlap="skip")
    failed = http.post(f"/schedules/{body['id']}/trigger").json()["task"]["task_id"]
    with psycopg.connect(api.database_url) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'failed', failed_at = now(), completed_at = now()"
            " WHERE id = %s",
            (failed,),
        )
    assert http.post(f"/schedules/{body['id']}/trigger").status_code == 201
    response = http.post(f"/tasks/{failed}/retry")
    assert response.status_code == 409 and "has not finished" in response.text


def test_schedule_created_now_fires_only_later(api, http):
    body = create(http, cron="@every 1s")
    created = utc(body["created_at"])
    assert utc(body["next_fire_times"][0]["utc"]) == created + timedelta(seconds=1)
    fire(api.database_url, created + timedelta(milliseconds=999))
    assert http.get(f"/schedules/{body['id']}/ticks").json()["ticks"] == []
    fire(api.database_url, created + timedelta(seconds=1))
    ticks = http.get(f"/schedules/{body['id']}/ticks").json()["ticks"]
    assert [(utc(t["fire_time"]), t["outcome"]) for t in ticks] == [
        (created + timedelta(seconds=1), "started")
    ]
