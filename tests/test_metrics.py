"""Prometheus metrics of real processes: the scheduler's /metrics and the coordinator's and
worker's --metrics-port, scraped and parsed with the Prometheus text parser, before and after
real tasks and cron ticks ran."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.config import ConfigError
from coordinator_svc import config as coordinator_config
from devtools.cluster import Cluster, ServiceProcess, wait_for
from worker_svc import config as worker_config

from .test_cron_cluster import create
from .test_e2e import submit, wait_finished

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def metrics_port(proc: ServiceProcess) -> int:
    assert proc.ready_file is not None
    port: int = json.loads(proc.ready_file.read_text())["metrics_port"]
    return port


def scraper(url: str) -> Callable[[], Samples]:
    def scrape() -> Samples:
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain"), response.headers
        return parse(response.text)

    return scrape


def scrapers(cluster: Cluster) -> dict[str, Callable[[], Samples]]:
    coordinator, worker = cluster.coordinators[0], cluster.workers["worker-1"]
    return {
        "scheduler": scraper(f"{cluster.scheduler_url}/metrics"),
        "coordinator": scraper(f"http://127.0.0.1:{metrics_port(coordinator)}/metrics"),
        "worker": scraper(f"http://127.0.0.1:{metrics_port(worker)}/metrics"),
    }


@pytest.mark.parametrize("load", [coordinator_config.load, worker_config.load])
def test_metrics_port_is_off_by_default_and_checked(load):
    assert load([], {}).metrics_port is None
    assert load(["--metrics-port=0"], {}).metrics_port == 0
    assert load([], {"SKIPLOCK_METRICS_PORT": "9100"}).metrics_port == 9100
    with pytest.raises(ConfigError, match="--metrics-port"):
        load(["--metrics-port=70000"], {})


def test_every_service_counts_tasks_that_really_ran(cluster_factory):
    cluster = cluster_factory(workers=1, start=False)
    cluster.start_coordinator(extra_args=["--metrics-port=0"])
    cluster.start_scheduler()
    cluster.start_worker("worker-1", extra_args=["--metrics-port=0"])
    scrape = scrapers(cluster)
    before = {name: s() for name, s in scrape.items()}
    tasks = [submit(cluster, "true"), submit(cluster, "exit 2"), submit(cluster, "sleep 0.2")]
    wait_finished(cluster, tasks)

    def coordinator_caught_up() -> bool:
        ended = scrape["coordinator"]()
        return value(ended, "skiplock_attempt_run_duration_seconds_count") - value(
            before["coordinator"], "skiplock_attempt_run_duration_seconds_count"
        ) >= len(tasks)

    wait_for(coordinator_caught_up, 20, message=lambda: f"3 run durations\n{cluster.logs()}")
    after = {name: s() for name, s in scrape.items()}

    def moved(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    assert moved("scheduler", "skiplock_tasks_submitted_total") == 3
    assert value(after["scheduler"], "skiplock_worker_slots_total") == 4
    assert value(after["scheduler"], "skiplock_workers", state="live") == 1
    assert value(after["scheduler"], "skiplock_queue_due_tasks") == 0

    assert moved("coordinator", "skiplock_claimed_attempts_total") == 3
    assert moved("coordinator", "skiplock_claims_total") >= 1
    assert moved("coordinator", "skiplock_handovers_total", result="accepted") == 3
    ended = "skiplock_attempts_ended_total"
    assert moved("coordinator", ended, status="succeeded", reason="none") == 2
    assert moved("coordinator", ended, status="failed", reason="exit_code") == 1
    assert moved("coordinator", "skiplock_attempt_start_delay_seconds_count") == 3
    # The 0.2 s sleep lands above the 0.1 s bucket: observations are seconds.
    runs_over_01 = moved("coordinator", "skiplock_attempt_run_duration_seconds_count") - moved(
        "coordinator", "skiplock_attempt_run_duration_seconds_bucket", le="0.1"
    )
    assert runs_over_01 >= 1
    # A run is timed from just after its spawn returned (the command is already running), so
    # the 0.2 s sleep can be timed a few ms short; in milliseconds the sum would be about 200.
    assert 0.15 <= moved("coordinator", "skiplock_attempt_run_duration_seconds_sum") < 5

    assert moved("worker", "skiplock_worker_attempts_finished_total", state="succeeded") == 2
    assert moved("worker", "skiplock_worker_attempts_finished_total", state="failed") == 1
    assert value(after["worker"], "skiplock_worker_slots") == 4
    assert value(after["worker"], "skiplock_worker_slots_busy") == 0


def test_scheduler_reports_the_backlog_and_its_age(cluster_factory):
    cluster = cluster_factory(start=False)
    cluster.start_scheduler()  # no coordinator: what is submitted stays queued
    scrape = scraper(f"{cluster.scheduler_url}/metrics")
    submit(cluster, "true")
    submit(cluster, "true", delay_seconds=3600)

    def aged() -> Samples | None:
        samples = scrape()
        return samples if value(samples, "skiplock_queue_oldest_due_age_seconds") > 0 else None

    samples = wait_for(aged, 20, message="the oldest due task to age")
    assert samples is not None
    assert value(samples, "skiplock_queue_tasks") == 2
    assert value(samples, "skiplock_queue_due_tasks") == 1
    assert value(samples, "skiplock_queue_oldest_due_age_seconds") < 60
    assert value(samples, "skiplock_tasks_submitted_total") == 2
    # A batch counts each new task; a replayed idempotency key counts nothing.
    batch = {"tasks": [{"command": "true", "idempotency_key": "k1"}, {"command": "true"}]}
    assert cluster.http.post("/tasks/batch", json=batch).status_code == 201
    replay = {"tasks": [{"command": "true", "idempotency_key": "k1"}]}
    assert cluster.http.post("/tasks/batch", json=replay).status_code in (200, 201)
    assert value(scrape(), "skiplock_tasks_submitted_total") == 4


def test_coordinator_counts_cron_ticks_and_their_lag(cluster_factory):
    cluster = cluster_factory(workers=1, start=False)
    cluster.start_coordinator(extra_args=["--metrics-port=0"])
    cluster.start_scheduler()
    cluster.start_worker("worker-1")
    scrape = scraper(f"http://127.0.0.1:{metrics_port(cluster.coordinators[0])}/metrics")
    create(cluster.http, "every-second", cron="@every 1s")

    def ticked() -> Samples | None:
        samples = scrape()
        started = value(samples, "skiplock_cron_ticks_total", outcome="started")
        return samples if started >= 2 else None

    samples = wait_for(ticked, 30, message=lambda: f"two started ticks\n{cluster.logs()}")
    assert samples is not None
    lags = value(samples, "skiplock_cron_tick_lag_seconds_count")
    assert lags >= 2
    # Ticks are decided within about a poll interval of their fire time.
    assert value(samples, "skiplock_cron_tick_lag_seconds_sum") / lags < 10


def test_a_killed_worker_is_counted_lost_with_its_attempt(cluster_factory):
    cluster = cluster_factory(workers=0, start=False)
    cluster.start_coordinator(extra_args=["--metrics-port=0"])
    cluster.start_scheduler()
    doomed = cluster.start_worker("worker-1")
    coordinator = scraper(f"http://127.0.0.1:{metrics_port(cluster.coordinators[0])}/metrics")
    scheduler = scraper(f"{cluster.scheduler_url}/metrics")
    task_id = submit(cluster, "sleep 60")
    wait_for(
        lambda: cluster.http.get(f"/tasks/{task_id}").json()["status"] == "running",
        20,
        message="the task to run",
    )
    doomed.kill()

    def counted() -> Samples | None:
        samples = coordinator()
        lost = value(samples, "skiplock_workers_lost_total")
        ended = value(
            samples, "skiplock_attempts_ended_total", status="failed", reason="worker_lost"
        )
        return samples if lost == 1 and ended == 1 else None

    wait_for(counted, 30, message=lambda: f"the lost worker to be counted\n{cluster.logs()}")
    assert value(scheduler(), "skiplock_workers", state="lost") == 1
    assert value(scheduler(), "skiplock_workers", state="live") == 0


def test_without_the_database_the_scheduler_still_answers_metrics(cluster_factory):
    cluster = cluster_factory(start=False, database_url="postgresql://postgres@127.0.0.1:9/none")
    cluster.start_scheduler(wait=False)
    samples = scraper(f"{cluster.scheduler_url}/metrics")()
    assert value(samples, "skiplock_database_errors_total", operation="metrics") >= 1
    assert math.isnan(value(samples, "skiplock_queue_due_tasks"))
    assert value(samples, "skiplock_tasks_submitted_total") == 0
