"""The standard gRPC health service on real coordinator and worker processes, read by the probe
the container health checks run (`python -m common.probe HOST:PORT`): SERVING while they serve,
without the cluster token; a draining worker says NOT_SERVING before it stops."""

from __future__ import annotations

import signal
import subprocess
import sys

import psycopg

from devtools.cluster import LOOPBACK, Cluster, service_env, wait_for
from devtools.tasks import submit, wait_status


def probe(target: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "common.probe", target]
    return subprocess.run(command, env=service_env(), capture_output=True, text=True, timeout=30)


def test_coordinators_and_workers_answer_health_checks(cluster_factory):
    cluster: Cluster = cluster_factory(workers=1)
    coordinator = f"{LOOPBACK}:{cluster.coordinator_ports[0]}"
    worker = f"{LOOPBACK}:{cluster.worker_ports['worker-1']}"
    for target in (coordinator, worker):
        answer = probe(target)
        assert answer.returncode == 0, answer.stderr

    # A worker asked to stop drains its running command and says so meanwhile.
    with psycopg.connect(cluster.database_url, autocommit=True) as db:
        wait_status(db, submit(cluster, "sleep 60"), "running", cluster=cluster)
    cluster.workers["worker-1"].send_signal(signal.SIGTERM)

    def not_serving() -> bool:
        answer = probe(worker)
        return answer.returncode == 1 and "NOT_SERVING" in answer.stderr

    wait_for(not_serving, 30, message="the draining worker to say NOT_SERVING")
    assert probe(f"{LOOPBACK}:1").returncode == 1
