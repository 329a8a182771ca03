"""TLS on real processes, with certificates from `make certs` (devtools/certs.py).

A mutual-TLS cluster runs tasks; a client without a certificate (or with one from another CA)
is refused even when it holds the cluster token; a worker's certificate speaks only for its own
id and cannot call another worker; a coordinator's certificate cannot pose as a worker. A
one-way TLS cluster (server certificates and the cluster token) runs tasks too, and the
scheduler serves HTTPS when given a certificate.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest

from common.config import ConfigError
from coordinator_svc import config as coordinator_config
from devtools.certs import Issued, make_certs
from devtools.cluster import LOOPBACK, Cluster, ServiceProcess, service_env, wait_for
from devtools.tasks import submit, wait_status
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from tests.conftest import ClusterFactory
from tests.support.grpc_calls import bearer, call_code, stream_code
from worker_svc import config as worker_config

WORKERS = ("worker-1", "worker-2")


def tls_args(certs: dict[str, Issued], name: str, mutual: bool = True) -> list[str]:
    args = [f"--tls-cert={certs[name].cert}", f"--tls-key={certs[name].key}"]
    return [*args, f"--tls-ca={certs['ca'].cert}"] if mutual else args


def start_tls_cluster(cluster: Cluster, certs: dict[str, Issued], mutual: bool) -> Cluster:
    cluster.start_coordinator(extra_args=tls_args(certs, "coordinator", mutual))
    cluster.start_scheduler()
    for worker_id in WORKERS:
        cluster.start_worker(worker_id, slots=2, extra_args=tls_args(certs, worker_id, mutual))
    return cluster


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    return make_certs(tmp_path_factory.mktemp("certs"), WORKERS)


@pytest.fixture(scope="module")
def mtls(
    request: pytest.FixtureRequest,
    module_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    certs: dict[str, Issued],
) -> Iterator[Cluster]:
    """A cluster on mutual TLS, with the cluster token as well."""
    cluster = Cluster(module_database_url, tmp_path_factory.mktemp("mtls"))
    failed_before = request.session.testsfailed
    try:
        yield start_tls_cluster(cluster, certs, mutual=True)
    finally:
        if request.session.testsfailed > failed_before:
            print(cluster.logs())
        cluster.stop()


def read(path: Path) -> bytes:
    return path.read_bytes()


def tls_channel(target: str, ca: Path, pair: Issued | None) -> grpc.Channel:
    if pair is None:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(read(ca)))
    credentials = grpc.ssl_channel_credentials(read(ca), read(pair.key), read(pair.cert))
    return grpc.secure_channel(target, credentials)


def coordinator_target(cluster: Cluster) -> str:
    return f"{LOOPBACK}:{cluster.coordinator_ports[0]}"


def worker_target(cluster: Cluster, worker_id: str) -> str:
    return f"{LOOPBACK}:{cluster.worker_ports[worker_id]}"


def heartbeat(worker_id: str) -> pb.HeartbeatRequest:
    return pb.HeartbeatRequest(worker_id=worker_id, address="127.0.0.1:9", slots=1, free_slots=1)


def status_code(call: object, request: object, token: str) -> grpc.StatusCode:
    return call_code(call, request, bearer(token))


def registered_workers(cluster: Cluster) -> list[str]:
    with psycopg.connect(cluster.database_url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM workers ORDER BY id")]


def test_a_mutual_tls_cluster_runs_tasks(mtls):
    with psycopg.connect(mtls.database_url, autocommit=True) as db:
        task_ids = [submit(mtls, f"echo tls {i}") for i in range(6)]
        for task_id in task_ids:
            wait_status(db, task_id, "succeeded", cluster=mtls)
        ran_on = {row[0] for row in db.execute("SELECT DISTINCT worker_id FROM attempts")}
    assert ran_on <= set(WORKERS) and ran_on


def test_a_client_without_the_right_certificate_is_refused(mtls, certs, tmp_path):
    stranger = make_certs(tmp_path / "other-ca", ["worker-1"])
    clients = {
        "plaintext": grpc.insecure_channel(coordinator_target(mtls)),
        "no certificate": tls_channel(coordinator_target(mtls), certs["ca"].cert, None),
        "another CA": tls_channel(coordinator_target(mtls), certs["ca"].cert, stranger["worker-1"]),
    }
    for name, channel in clients.items():
        with channel:
            # The rogue holds the cluster token: without the certificate it gets nowhere.
            code = status_code(
                pb_grpc.CoordinatorStub(channel).Heartbeat, heartbeat("worker-1"), mtls.token
            )
        assert code == grpc.StatusCode.UNAVAILABLE, name
    with grpc.insecure_channel(worker_target(mtls, "worker-1")) as channel:
        request = pb.SubmitTasksRequest(
            attempts=[pb.SubmitTaskRequest(ref=pb.AttemptRef(task_id=str(uuid.uuid4()), attempt=1),
                                           command="touch /tmp/owned")]
        )  # fmt: skip
        code = status_code(pb_grpc.WorkerStub(channel).SubmitTasks, request, mtls.token)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert registered_workers(mtls) == list(WORKERS)


def test_a_worker_speaks_only_for_itself(mtls, certs):
    with tls_channel(coordinator_target(mtls), certs["ca"].cert, certs["worker-1"]) as channel:
        stub = pb_grpc.CoordinatorStub(channel)
        assert status_code(stub.Heartbeat, heartbeat("worker-2"), mtls.token) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert status_code(stub.Heartbeat, heartbeat("worker-3"), mtls.token) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        fake_success = pb.ReportStatusRequest(
            reports=[
                pb.StatusReport(
                    ref=pb.AttemptRef(task_id=str(uuid.uuid4()), attempt=1),
                    worker_id="worker-2",
                    state=pb.ATTEMPT_STATE_SUCCEEDED,
                    exit_code=0,
                    output_path="/etc/shadow",
                )
            ]
        )
        assert status_code(stub.ReportStatus, fake_success, mtls.token) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert stream_code(stub.ReportStream, fake_success, bearer(mtls.token)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    assert registered_workers(mtls) == list(WORKERS)


def test_each_direction_needs_its_own_role(mtls, certs):
    hand_over = pb.SubmitTasksRequest(
        attempts=[pb.SubmitTaskRequest(ref=pb.AttemptRef(task_id=str(uuid.uuid4()), attempt=1),
                                       command="touch /tmp/owned")]
    )  # fmt: skip
    # A worker's certificate cannot hand work to another worker...
    target = worker_target(mtls, "worker-2")
    with tls_channel(target, certs["ca"].cert, certs["worker-1"]) as channel:
        code = status_code(pb_grpc.WorkerStub(channel).SubmitTasks, hand_over, mtls.token)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        stream = pb_grpc.WorkerStub(channel).SubmitStream
        assert stream_code(stream, hand_over, bearer(mtls.token)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    # ...nor can the scheduler's (no skiplock role), and a coordinator's cannot pose as a worker.
    with tls_channel(target, certs["ca"].cert, certs["scheduler"]) as channel:
        code = status_code(pb_grpc.WorkerStub(channel).SubmitTasks, hand_over, mtls.token)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    target = coordinator_target(mtls)
    with tls_channel(target, certs["ca"].cert, certs["coordinator"]) as channel:
        code = status_code(pb_grpc.CoordinatorStub(channel).Heartbeat, heartbeat("c"), mtls.token)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert registered_workers(mtls) == list(WORKERS)


def probe(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "common.probe", target]
    return subprocess.run(command, env=service_env(env), capture_output=True, text=True, timeout=30)


def test_the_health_probe_speaks_mutual_tls(mtls, certs):
    own = {
        "SKIPLOCK_TLS_CERT_FILE": str(certs["worker-1"].cert),
        "SKIPLOCK_TLS_KEY_FILE": str(certs["worker-1"].key),
        "SKIPLOCK_TLS_CA_FILE": str(certs["ca"].cert),
    }
    # Any certificate of the cluster will do (health needs no role, nor the token)...
    for target in (coordinator_target(mtls), worker_target(mtls, "worker-2")):
        answer = probe(target, own)
        assert answer.returncode == 0, answer.stderr
    # ...but one there must be.
    refused = probe(coordinator_target(mtls), {})
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr


def test_a_one_way_tls_cluster_with_the_token_runs_tasks(cluster_factory: ClusterFactory, certs):
    # Servers prove who they are; callers prove it with the token. Clients verify servers against
    # gRPC's default roots, which this variable points at the development CA.
    env = {"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(certs["ca"].cert)}
    cluster = start_tls_cluster(cluster_factory(start=False, env=env), certs, mutual=False)
    with psycopg.connect(cluster.database_url, autocommit=True) as db:
        wait_status(db, submit(cluster, "echo one-way"), "succeeded", cluster=cluster)
    with grpc.insecure_channel(coordinator_target(cluster)) as channel:
        code = status_code(
            pb_grpc.CoordinatorStub(channel).Heartbeat, heartbeat("rogue"), cluster.token
        )
    assert code == grpc.StatusCode.UNAVAILABLE


def test_the_scheduler_serves_https(certs, database_url, tmp_path):
    scheduler = ServiceProcess.python_module(
        "scheduler",
        "scheduler_svc",
        [f"--scheduler_port={LOOPBACK}:0", *tls_args(certs, "scheduler", mutual=False)],
        tmp_path / "scheduler.log",
        {"DATABASE_URL": database_url},
        ready_file=tmp_path / "scheduler.ready",
    ).start()
    try:
        port = scheduler.wait_ready().port
        trust = ssl.create_default_context(cafile=str(certs["ca"].cert))
        with httpx.Client(verify=trust, timeout=5) as client:
            answer = wait_for(
                lambda: client.get(f"https://localhost:{port}/healthz"),
                30,
                message=scheduler.describe,
                ignore=(httpx.HTTPError,),
            )
            assert answer.json() == {"status": "ok"}
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{LOOPBACK}:{port}/healthz", timeout=5).raise_for_status()
    finally:
        scheduler.cleanup()


# --- configuration --------------------------------------------------------------------------


def test_mutual_tls_is_a_credential_and_one_way_tls_is_not(certs):
    mutual = ["--coordinator_port=0.0.0.0:7000", *tls_args(certs, "coordinator")]
    assert coordinator_config.load(mutual, {}).security.mutual_tls
    with pytest.raises(ConfigError, match="mutual TLS"):
        coordinator_config.load(["--coordinator_port=0.0.0.0:7000",
                                 *tls_args(certs, "coordinator", mutual=False)], {})  # fmt: skip
    env = {
        "SKIPLOCK_TLS_CERT_FILE": str(certs["worker-1"].cert),
        "SKIPLOCK_TLS_KEY_FILE": str(certs["worker-1"].key),
        "SKIPLOCK_TLS_CA_FILE": str(certs["ca"].cert),
    }
    config = worker_config.load(["--worker_port=0.0.0.0:7000"], env)
    assert config.security.tls is not None
    assert config.security.tls.cert == certs["worker-1"].cert.read_bytes()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tls-cert=CERT"], "both --tls-cert and --tls-key"),
        (["--tls-ca=CA"], "both --tls-cert and --tls-key"),
        (["--tls-cert=CERT", "--tls-key=MISSING"], "--tls-key: cannot read"),
        (["--tls-cert=NOTPEM", "--tls-key=KEY"], "--tls-cert: .* is not PEM"),
    ],
)
def test_incomplete_tls_settings_are_refused(certs, tmp_path, args, says):
    (tmp_path / "notpem").write_text("hello")
    paths = {
        "CERT": str(certs["coordinator"].cert),
        "KEY": str(certs["coordinator"].key),
        "CA": str(certs["ca"].cert),
        "MISSING": str(tmp_path / "missing"),
        "NOTPEM": str(tmp_path / "notpem"),
    }
    resolved = [arg.split("=")[0] + "=" + paths[arg.split("=")[1]] for arg in args]
    with pytest.raises(ConfigError, match=says):
        coordinator_config.load(resolved, {})


def test_certificates_name_roles_and_keys_are_private(certs):
    from cryptography import x509

    for name, uri in (("coordinator", "skiplock://coordinator"),
                      ("worker-1", "skiplock://worker/worker-1")):  # fmt: skip
        cert = x509.load_pem_x509_certificate(certs[name].cert.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        assert certs[name].key.stat().st_mode & 0o077 == 0
