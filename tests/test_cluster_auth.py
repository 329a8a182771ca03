"""Cluster authentication: with SKIPLOCK_CLUSTER_TOKEN, coordinator and worker reject gRPC calls
that lack the token; without one they bind only loopback unless --insecure. Real processes."""

from __future__ import annotations

import functools
import ipaddress
import uuid
from pathlib import Path

import grpc
import pytest

from devtools.cluster import LOOPBACK, ServiceProcess, wait_for
from devtools.tasks import submit, wait_status
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from tests.support.grpc_calls import Metadata, call_code, stream_code


def listening_hosts(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses with a listening TCP socket on `port`, from /proc/net/tcp and tcp6
    (IPv4-mapped IPv6 addresses given as IPv4)."""
    hosts: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            addr_hex, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            # The kernel prints each 32-bit word in host (little-endian) byte order.
            raw = b"".join(
                bytes.fromhex(addr_hex[i : i + 8])[::-1] for i in range(0, len(addr_hex), 8)
            )
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                hosts.add(address.ipv4_mapped)
            else:
                hosts.add(address)
    return hosts


def test_calls_without_the_cluster_token_are_unauthenticated(cluster_factory, db, tmp_path):
    cluster = cluster_factory(workers=1)
    good = (("authorization", f"Bearer {cluster.token}"),)
    bad: list[Metadata] = [(), (("authorization", "Bearer wrong"),), (("authorization", ""),)]
    marker = tmp_path / "ran"
    attempt = pb.SubmitTaskRequest(
        ref=pb.AttemptRef(task_id=str(uuid.uuid4()), attempt=1), command=f"touch {marker}"
    )
    submit_request = pb.SubmitTasksRequest(attempts=[attempt])
    heartbeat = pb.HeartbeatRequest(worker_id="intruder", address="127.0.0.1:1", slots=1)

    coordinator_channel = grpc.insecure_channel(f"{LOOPBACK}:{cluster.coordinator_ports[0]}")
    worker_channel = grpc.insecure_channel(f"{LOOPBACK}:{cluster.worker_ports['worker-1']}")
    with coordinator_channel, worker_channel:
        coordinator = pb_grpc.CoordinatorStub(coordinator_channel)
        worker = pb_grpc.WorkerStub(worker_channel)
        for metadata in bad:
            assert call_code(coordinator.Heartbeat, heartbeat, metadata) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            assert call_code(coordinator.ReportStatus, pb.ReportStatusRequest(), metadata) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            assert call_code(worker.SubmitTasks, submit_request, metadata) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            # The streams too, refused when they open rather than after a first request.
            assert stream_code(coordinator.ReportStream, pb.ReportStatusRequest(), metadata) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            assert stream_code(worker.SubmitStream, submit_request, metadata) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            cancel = pb.CancelTaskRequest(ref=attempt.ref)
            assert call_code(worker.CancelTask, cancel, metadata) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
        # The right token gets through to the handlers (which then judge the request).
        malformed = pb.HeartbeatRequest(worker_id="", address="x", slots=1)
        assert call_code(coordinator.Heartbeat, malformed, good) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        answer = worker.CancelTask(pb.CancelTaskRequest(ref=attempt.ref), metadata=good)
        assert answer == pb.CancelTaskResponse()
    # Nothing registered, nothing ran; the cluster itself works with the token.
    assert db.execute("SELECT id FROM workers").fetchall() == [("worker-1",)]
    task_id = submit(cluster, "true")
    wait_status(db, task_id, "succeeded", cluster=cluster)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("module", "flag"),
    [("coordinator_svc", "--coordinator_port"), ("worker_svc", "--worker_port")],
)
def test_without_a_token_only_loopback_is_bound_unless_insecure(
    module, flag, database_url, tmp_path
):
    env = {"DATABASE_URL": database_url}
    refused = ServiceProcess.python_module(
        "refused", module, [f"{flag}=0.0.0.0:0"], tmp_path / "refused.log", env
    ).start()
    try:
        assert refused.wait(30) != 0
        assert "SKIPLOCK_CLUSTER_TOKEN" in refused.log_text()
    finally:
        refused.cleanup()

    # A bare ":port" means loopback only; --insecure allows every interface.
    for args, everywhere in (([], False), (["--insecure"], True)):
        proc = ServiceProcess.python_module(
            "service", module, [f"{flag}=:0", *args], tmp_path / "service.log", env,
            ready_file=tmp_path / "service.ready",
        ).start()  # fmt: skip
        try:
            port = proc.wait_ready().port
            hosts = wait_for(functools.partial(listening_hosts, port), 30, message=proc.describe)
            if everywhere:
                assert any(h.is_unspecified for h in hosts), hosts
            else:
                assert all(h.is_loopback for h in hosts), hosts
        finally:
            proc.cleanup()
