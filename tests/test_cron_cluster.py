"""Cron schedules end to end: real scheduler, coordinators and workers running real commands."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import psycopg

from devtools.cluster import Cluster, wait_for

Db = psycopg.Connection[Any]


def create(http: httpx.Client, name: str, **fields: Any) -> str:
    body = {"name": name, "cron": "* * * * * *", "command": "true", "overlap": "allow"} | fields
    response = http.post("/schedules", json=body)
    assert response.status_code == 201, response.text
    schedule_id: str = response.json()["id"]
    return schedule_id


def ticks(db: Db, schedule_id: str) -> list[tuple[datetime, str, datetime, Any]]:
    """(fire_time, outcome, recorded_at, task_id) oldest first."""
    return db.execute(
        "SELECT fire_time, outcome, recorded_at, task_id FROM schedule_ticks"
        " WHERE schedule_id = %s ORDER BY fire_time",
        (schedule_id,),
    ).fetchall()


def runs(db: Db, schedule_id: str) -> list[tuple[Any, ...]]:
    """(id, fire_time, status, started_at, completed_at) of the runs, in fire order."""
    return db.execute(
        "SELECT id, fire_time, status, started_at, completed_at FROM tasks"
        " WHERE schedule_id = %s ORDER BY fire_time",
        (schedule_id,),
    ).fetchall()


def stop_and_settle(cluster: Cluster, db: Db, schedule_ids: list[str]) -> None:
    """Delete the schedules and wait until every run they started has finished."""
    for sid in schedule_ids:
        assert cluster.http.delete(f"/schedules/{sid}").status_code == 204

    def settled() -> bool:
        row = db.execute(
            "SELECT count(*) FROM tasks WHERE schedule_id = ANY(%s::uuid[])"
            " AND status IN ('queued', 'dispatched', 'running')",
            (schedule_ids,),
        ).fetchone()
        return row is not None and row[0] == 0

    wait_for(settled, 30, message=lambda: f"runs to finish\n{cluster.logs()}")


def assert_contiguous(fires: list[datetime], step: timedelta) -> None:
    assert fires, "no ticks"
    assert fires == [fires[0] + k * step for k in range(len(fires))]


def test_two_coordinators_fire_every_tick_exactly_once(cluster_factory, db):
    cluster = cluster_factory(workers=2, coordinators=2, slots=4)
    ids = [create(cluster.http, f"race-{i:02d}") for i in range(20)]

    def enough() -> bool:
        row = db.execute(
            "SELECT min(n) FROM (SELECT count(k.fire_time) AS n FROM schedules s"
            " LEFT JOIN schedule_ticks k ON k.schedule_id = s.id GROUP BY s.id) c"
        ).fetchone()
        return row is not None and row[0] >= 10

    wait_for(enough, 60, interval=0.2, message=lambda: f"10 ticks each\n{cluster.logs()}")
    stop_and_settle(cluster, db, ids)
    total = 0
    for sid in ids:
        ledger = ticks(db, sid)
        assert_contiguous([t[0] for t in ledger], timedelta(seconds=1))
        assert {t[1] for t in ledger} == {"started"}
        started = runs(db, sid)
        assert [(r[0], r[1]) for r in started] == [(t[3], t[0]) for t in ledger]
        assert {r[2] for r in started} == {"succeeded"}
        assert all(r[3] >= r[1] for r in started), "a run started before its fire time"
        total += len(ledger)
    assert total >= 20 * 10


def test_stopped_coordinators_catch_up_recent_ticks_and_record_older_ones_missed(
    cluster_factory, db
):
    cluster = cluster_factory(workers=1, coordinators=1)
    window = 3
    sid = create(cluster.http, "outage", cron="@every 1s", catchup_window_seconds=window)
    wait_for(lambda: len(ticks(db, sid)) >= 2, 20, message=lambda: cluster.logs())
    coordinator = cluster.coordinators[0]
    assert coordinator.stop() == 0

    def db_now() -> datetime:
        row = db.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    down_at = db_now()
    # The outage: several ticks go by with no coordinator at all.
    wait_for(lambda: db_now() > down_at + timedelta(seconds=window + 4), 20)
    cluster.start_coordinator(port=cluster.coordinator_ports[0])
    back_at = db_now()
    wait_for(
        lambda: ticks(db, sid)[-1][0] > back_at + timedelta(seconds=1),
        30,
        message=lambda: cluster.logs(),
    )
    stop_and_settle(cluster, db, [sid])

    ledger = ticks(db, sid)
    assert_contiguous([t[0] for t in ledger], timedelta(seconds=1))
    for fire_time, outcome, recorded_at, _ in ledger:
        late = recorded_at - fire_time
        assert outcome == ("missed" if late > timedelta(seconds=window) else "started"), ledger
    outcomes = [t[1] for t in ledger]
    assert outcomes.count("missed") >= 2
    caught_up = [t for t in ledger if t[1] == "started" and t[2] - t[0] > timedelta(seconds=0.5)]
    assert len(caught_up) >= 2, ledger
    started = runs(db, sid)
    assert [r[0] for r in started] == [t[3] for t in ledger if t[1] == "started"]
    assert {r[2] for r in started} == {"succeeded"}


def overlapping(intervals: list[tuple[datetime, datetime]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in pairwise(ordered))


def test_overlap_policies_with_real_commands(cluster_factory, db):
    cluster = cluster_factory(workers=2, coordinators=1, slots=4)
    skip = create(cluster.http, "skip", overlap="skip", command="sleep 2.5")
    allow = create(cluster.http, "allow", overlap="allow", command="sleep 2.5")
    cancel = create(
        cluster.http, "cancel", cron="*/2 * * * * *", overlap="cancel_previous", command="sleep 60"
    )

    def enough() -> bool:
        return len(ticks(db, skip)) >= 8 and len(ticks(db, cancel)) >= 4

    wait_for(enough, 60, interval=0.2, message=lambda: cluster.logs())

    # cancel_previous: every tick after the first stopped the run before it, on its worker.
    cancel_ledger = ticks(db, cancel)
    assert [t[1] for t in cancel_ledger][:4] == ["started"] + ["cancelled_previous"] * 3

    def previous_runs_stopped() -> bool:
        rows = db.execute(
            "SELECT a.status, a.reason FROM attempts a JOIN tasks t ON t.id = a.task_id"
            " WHERE t.schedule_id = %s AND t.fire_time <= %s",
            (cancel, cancel_ledger[2][0]),
        ).fetchall()
        return len(rows) >= 3 and all(r == ("cancelled", "cancelled") for r in rows)

    wait_for(previous_runs_stopped, 20, message=lambda: f"cancelled attempts\n{cluster.logs()}")
    assert cluster.http.delete(f"/schedules/{cancel}").status_code == 204
    last = runs(db, cancel)[-1][0]  # the one run nothing will cancel any more
    assert cluster.http.post(f"/tasks/{last}/cancel").status_code == 200
    stop_and_settle(cluster, db, [skip, allow])

    # skip: never two runs at once; the ticks in between say why they did not run.
    skip_ledger = ticks(db, skip)
    assert_contiguous([t[0] for t in skip_ledger], timedelta(seconds=1))
    assert {t[1] for t in skip_ledger} == {"started", "skipped_overlap"}
    skip_runs = runs(db, skip)
    assert len(skip_runs) >= 2
    assert not overlapping([(r[3], r[4]) for r in skip_runs])

    # allow: every tick ran, and runs did overlap.
    allow_ledger = ticks(db, allow)
    assert {t[1] for t in allow_ledger} == {"started"}
    allow_runs = runs(db, allow)
    assert {r[2] for r in allow_runs} == {"succeeded"}
    assert overlapping([(r[3], r[4]) for r in allow_runs])

    cancel_runs = runs(db, cancel)
    assert [r[2] for r in cancel_runs[:-1]] == ["cancelled"] * (len(cancel_runs) - 1)
