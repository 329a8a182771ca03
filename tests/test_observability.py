"""The compose profile `observability` (Prometheus + Grafana), its Prometheus configuration and
the Grafana dashboard, checked structurally like the rest of the compose file: every service is
scraped where it really serves metrics, and every metric the dashboard plots is one a service
exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import coordinator_svc.metrics
import scheduler_svc.metrics
import worker_svc.metrics
from coordinator_svc import config as coordinator_config
from worker_svc import config as worker_config

from .test_compose import REPO, command, container_ports, environment, load

assert coordinator_svc.metrics and scheduler_svc.metrics and worker_svc.metrics  # registered
PROFILE = ("prometheus", "grafana")
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def host_file(service: dict[str, Any], target: str) -> Path:
    """The repository file a service mounts at `target`."""
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("./"), volume
            path = REPO / source
            assert path.is_file(), f"{path} is mounted but missing"
            return path
    raise AssertionError(f"nothing mounted at {target}: {service.get('volumes')}")


def prometheus_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    prometheus = services["prometheus"]
    flags = dict(a.split("=", 1) for a in command(prometheus) if "=" in a)
    path = host_file(prometheus, flags["--config.file"])
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def jobs(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in prometheus_config(services)["scrape_configs"]}


@pytest.mark.parametrize("name", PROFILE)
def test_only_the_observability_profile_starts_them(services, name):
    assert services[name]["profiles"] == ["observability"]
    assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
    assert services[name]["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in services[name]["security_opt"]


def test_prometheus_scrapes_every_service(services):
    assert set(jobs(services)) == {"scheduler", "coordinator", "worker"}


@pytest.mark.parametrize(
    ("name", "load_config"),
    [("coordinator", coordinator_config.load), ("worker", worker_config.load)],
)
def test_grpc_services_are_scraped_on_their_metrics_port_on_every_replica(
    services, name, load_config
):
    job = jobs(services)[name]
    (sd,) = job["dns_sd_configs"]
    # The compose service name resolves to every replica (--scale worker=3).
    assert sd["names"] == [name] and sd["type"] == "A"
    env = environment(services[name])
    assert load_config([], env | {"DATABASE_URL": "postgresql://x/y"}).metrics_port == sd["port"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_scheduler_is_scraped_with_a_read_only_token_from_a_secret(compose, services):
    job = jobs(services)["scheduler"]
    ((host, port),) = [t.rsplit(":", 1) for t in job["static_configs"][0]["targets"]]
    assert host == "scheduler" and (port, int(port)) in container_ports(services["scheduler"])
    credentials = job["authorization"]["credentials_file"]
    secret = Path(credentials).name
    assert credentials == f"/run/secrets/{secret}"
    assert secret in services["prometheus"]["secrets"]
    variable = compose["secrets"][secret]["environment"]
    assert variable == "SKIPLOCK_API_READ_TOKEN"
    assert environment(services["scheduler"])[variable], "the scheduler must know the token"


def test_grafana_provisions_prometheus_and_the_dashboard(services):
    grafana = services["grafana"]
    sources = yaml.safe_load(
        host_file(grafana, "/etc/grafana/provisioning/datasources/skiplock.yml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert "9090" in [p.rsplit(":", 1)[-1] for p in services["prometheus"]["ports"]]
    providers = yaml.safe_load(
        host_file(grafana, "/etc/grafana/provisioning/dashboards/skiplock.yml").read_text()
    )
    folder = providers["providers"][0]["options"]["path"]
    mounted = host_file(grafana, f"{folder}/skiplock.json")
    assert mounted.resolve() == DASHBOARD.resolve()
    uids = {t["datasource"]["uid"] for p in dashboard()["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
    assert environment(grafana)["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def exported_samples() -> set[str]:
    """Every sample name the services' metrics produce (counters' _total, histograms' _bucket,
    _sum and _count)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("skiplock_"):
            names.add(family.name)
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
            }.get(family.type, [""])
            names |= {family.name + suffix for suffix in suffixes}
    return names


def test_every_metric_on_the_dashboard_is_exported():
    panels = dashboard()["panels"]
    assert len(panels) >= 8
    used = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"\bskiplock_[a-z_]+", target["expr"])
    }
    missing = used - exported_samples()
    assert not missing, f"the dashboard plots metrics no service exports: {sorted(missing)}"
    wanted = {
        "skiplock_tasks_submitted_total",
        "skiplock_attempts_ended_total",
        "skiplock_attempt_start_delay_seconds_bucket",
        "skiplock_attempt_run_duration_seconds_bucket",
        "skiplock_queue_due_tasks",
        "skiplock_queue_oldest_due_age_seconds",
        "skiplock_worker_slots_busy_total",
        "skiplock_cron_ticks_total",
        "skiplock_database_errors_total",
    }
    assert wanted <= used, sorted(wanted - used)
