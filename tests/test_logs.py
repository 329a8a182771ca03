"""Logs: every service's --log-format and --log-level, and one INFO line per task transition
with the task, attempt, worker and schedule as fields, read from real processes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.config import ConfigError
from coordinator_svc import config as coordinator_config
from devtools.cluster import Cluster, wait_for
from scheduler_svc import config as scheduler_config
from worker_svc import config as worker_config

from .test_e2e import submit, wait_finished

LOADERS = [coordinator_config.load, scheduler_config.load, worker_config.load]


@pytest.mark.parametrize("load", LOADERS)
def test_log_flags_default_to_their_environment_variables(load):
    config = load([], {"SKIPLOCK_LOG_FORMAT": "JSON", "SKIPLOCK_LOG_LEVEL": "warning"})
    assert (config.log.format, config.log.level) == ("json", "warning")
    config = load(["--log-format=text", "--log-level=debug"], {"SKIPLOCK_LOG_FORMAT": "json"})
    assert (config.log.format, config.log.level) == ("text", "debug")
    assert (load([], {}).log.format, load([], {}).log.level) == ("text", "info")


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("flag", ["--log-format=xml", "--log-level=loud"])
def test_unknown_log_settings_are_refused_by_name(load, flag):
    with pytest.raises(ConfigError, match=flag.split("=")[0]):
        load([flag], {})


def json_lines(cluster: Cluster) -> list[dict[str, Any]]:
    """Every line every service wrote, each parsed as one JSON object (the cluster's own
    '==== start' markers aside)."""
    lines: list[dict[str, Any]] = []
    for proc in cluster.processes():
        for line in proc.log_text().splitlines():
            if line.startswith("==== start "):
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{proc.name} wrote a line that is not JSON: {line!r}")
    return lines


def transitions(cluster: Cluster, task_id: str) -> dict[str, dict[str, Any]]:
    return {e["event"]: e for e in json_lines(cluster) if e.get("task_id") == task_id}


def test_json_logs_carry_each_transition_of_a_task_with_its_fields(cluster_factory):
    cluster = cluster_factory(
        workers=1, start=False, env={"SKIPLOCK_LOG_FORMAT": "json", "SKIPLOCK_LOG_LEVEL": "info"}
    )
    cluster.start_coordinator()
    cluster.start_scheduler(extra_args=["--log-format=json"])
    cluster.start_worker("worker-1")
    ok, failing = submit(cluster, "echo hello"), submit(cluster, "exit 3")
    wait_finished(cluster, [ok, failing])
    wanted = {"task accepted", "task dispatched", "task ended"}

    def all_logged() -> bool:
        return all(wanted <= transitions(cluster, t).keys() for t in (ok, failing))

    wait_for(all_logged, 20, message=lambda: f"{wanted} for {ok}, {failing}\n{cluster.logs()}")
    seen = transitions(cluster, ok)
    assert seen["task accepted"]["service"] == "scheduler"
    assert seen["task accepted"]["level"] == "info"
    for event in ("task dispatched", "task started", "task ended"):
        line = seen.get(event, seen["task ended"])
        assert line["service"] == "coordinator", line
        assert (line["attempt"], line["worker_id"]) == (1, "worker-1"), line
        assert "schedule_id" in line and line["schedule_id"] is None, line
        assert line["timestamp"].endswith("Z"), line
    ended = seen["task ended"]
    assert (ended["status"], ended["reason"], ended["exit_code"]) == ("succeeded", None, 0)
    assert 0 <= ended["duration_seconds"] < 30, ended
    failed = transitions(cluster, failing)["task ended"]
    assert (failed["status"], failed["reason"], failed["exit_code"]) == ("failed", "exit_code", 3)
    # Each attempt's start delay is logged once: on a `task started` line, or on its `task
    # ended` line when the ending is how its start became known (a command this short ends
    # before its worker sends the start).
    for task_id in (ok, failing):
        lines = [e for e in json_lines(cluster) if e.get("task_id") == task_id]
        delays = [e["start_delay_seconds"] for e in lines if "start_delay_seconds" in e]
        assert len(delays) == 1 and delays[0] >= 0, lines
        starts = [e for e in lines if e["event"] == "task started"]
        assert len(starts) <= 1, starts
    # The services' own lines (not only transitions) are JSON too, and secrets never appear.
    services = {e.get("service") for e in json_lines(cluster)}
    assert services == {"scheduler", "coordinator", "worker"}
    for proc in cluster.processes():
        assert cluster.token not in proc.log_text()


def test_text_logs_name_the_fields_and_warning_level_drops_info(cluster_factory):
    cluster = cluster_factory(workers=1, start=False)
    cluster.start_coordinator(extra_args=["--log-level=warning"])
    cluster.start_scheduler()
    cluster.start_worker("worker-1")
    task_id = submit(cluster, "true")
    wait_finished(cluster, [task_id])
    scheduler = cluster.scheduler
    assert scheduler is not None
    wait_for(
        lambda: f"task_id={task_id}" in scheduler.log_text(),
        20,
        message=lambda: f"a text line naming task_id={task_id}\n{cluster.logs()}",
    )
    line = next(x for x in scheduler.log_text().splitlines() if f"task_id={task_id}" in x)
    assert "task accepted" in line and "[info" in line, line
    assert task_id not in cluster.coordinators[0].log_text()


def test_cron_runs_carry_their_schedule_and_tokens_never_appear(cluster_factory):
    api_token = "api-" + "x7" * 16
    cluster = cluster_factory(
        workers=1,
        start=False,
        env={"SKIPLOCK_LOG_FORMAT": "json", "SKIPLOCK_API_TOKEN": api_token},
    )
    cluster.start_coordinator()
    cluster.start_scheduler()
    cluster.start_worker("worker-1")
    headers = {"Authorization": f"Bearer {api_token}"}
    assert cluster.http.get("/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    body = {"name": "every-second", "cron": "@every 1s", "command": "true", "overlap": "allow"}
    response = cluster.http.post("/schedules", json=body, headers=headers)
    assert response.status_code == 201, response.text
    schedule_id = response.json()["id"]

    def run_ended() -> dict[str, Any] | None:
        lines = json_lines(cluster)
        ticks = {
            e["task_id"]: e
            for e in lines
            if e["event"] == "tick decided" and e["schedule_id"] == schedule_id
        }
        ended = [e for e in lines if e["event"] == "task ended" and e["task_id"] in ticks]
        return ticks[ended[0]["task_id"]] | {"ended": ended[0]} if ended else None

    tick = wait_for(run_ended, 30, message=lambda: f"a cron run to end\n{cluster.logs()}")
    assert tick is not None
    assert (tick["outcome"], tick["service"]) == ("started", "coordinator")
    assert tick["ended"]["schedule_id"] == schedule_id
    assert tick["ended"]["status"] == "succeeded"
    for proc in cluster.processes():
        text = proc.log_text()
        assert api_token not in text and cluster.token not in text, proc.name
