"""Strict input at both gRPC edges, on real processes: a coordinator and a worker holding the
cluster token answer malformed messages with INVALID_ARGUMENT naming the field (never UNKNOWN,
UNAVAILABLE or a traceback), change nothing, and keep working."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import psycopg
import pytest

from devtools.cluster import LOOPBACK, Cluster
from devtools.tasks import submit, wait_status
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc

TASK = str(uuid.uuid4())
REF = pb.AttemptRef(task_id=TASK, attempt=1)
TOO_EARLY = -62_135_596_801  # a second before 0001-01-01, outside google.protobuf.Timestamp


def heartbeat(**fields: Any) -> pb.HeartbeatRequest:
    base: dict[str, Any] = {
        "worker_id": "rogue", "address": "127.0.0.1:9", "slots": 1, "free_slots": 1,
    }  # fmt: skip
    return pb.HeartbeatRequest(**(base | fields))


def report(**fields: Any) -> pb.ReportStatusRequest:
    base: dict[str, Any] = {
        "ref": REF, "worker_id": "worker-1", "state": pb.ATTEMPT_STATE_SUCCEEDED, "exit_code": 0,
    }  # fmt: skip
    return pb.ReportStatusRequest(reports=[pb.StatusReport(**(base | fields))])


def stamped(seconds: int, nanos: int = 0) -> pb.StatusReport:
    item = pb.StatusReport(ref=REF, worker_id="worker-1", state=pb.ATTEMPT_STATE_SUCCEEDED)
    item.started_at.seconds, item.started_at.nanos = seconds, nanos
    return item


COORDINATOR_CASES: dict[str, tuple[str, object, str]] = {
    "nul-worker-id": ("Heartbeat", heartbeat(worker_id="w\x00rker"), "worker_id must be printable"),
    "long-worker-id": ("Heartbeat", heartbeat(worker_id="w" * 201), "worker_id must be 1-200"),
    "empty-worker-id": ("Heartbeat", heartbeat(worker_id=""), "worker_id must be 1-200"),
    "wildcard-address": ("Heartbeat", heartbeat(address="0.0.0.0:9"), "not a reachable host:port"),
    "nul-address": ("Heartbeat", heartbeat(address="h\x00st:9"), "not a reachable host:port"),
    "port-0": ("Heartbeat", heartbeat(address="host:0"), "not a reachable host:port"),
    "negative-slots": ("Heartbeat", heartbeat(slots=-1, free_slots=0), "slots must be"),
    "free-above-slots": ("Heartbeat", heartbeat(slots=1, free_slots=2), "free_slots"),
    "held-bad-uuid": (
        "Heartbeat",
        heartbeat(held=[pb.AttemptRef(task_id="nope", attempt=1)]),
        "held[0].task_id must be a UUID",
    ),
    "report-bad-uuid": (
        "ReportStatus",
        report(ref=pb.AttemptRef(task_id=TASK.upper(), attempt=1)),
        "reports[0].ref.task_id must be a UUID",
    ),
    "report-attempt-0": ("ReportStatus", report(ref=pb.AttemptRef(task_id=TASK)), "attempt must"),
    "report-nul-path": ("ReportStatus", report(output_path="/tmp/x\x00y"), "output_path must not"),
    "report-nul-detail": ("ReportStatus", report(detail="oops\x00"), "detail must not"),
    "report-huge-path": ("ReportStatus", report(output_path="/" * 5000), "output_path must be"),
    "report-exit-code": ("ReportStatus", report(exit_code=-3), "exit_code must be 0-255"),
    "report-state": ("ReportStatus", report(state=pb.ATTEMPT_STATE_UNSPECIFIED), "state is not"),
    "report-early-stamp": (
        "ReportStatus",
        pb.ReportStatusRequest(reports=[stamped(TOO_EARLY)]),
        "started_at is out of range",
    ),
    "report-bad-nanos": (
        "ReportStatus",
        pb.ReportStatusRequest(reports=[stamped(0, -1)]),
        "started_at is out of range",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def channels(module_cluster: Cluster) -> Iterator[tuple[grpc.Channel, grpc.Channel]]:
    coordinator = grpc.insecure_channel(f"{LOOPBACK}:{module_cluster.coordinator_ports[0]}")
    worker = grpc.insecure_channel(f"{LOOPBACK}:{module_cluster.worker_ports['worker-1']}")
    with coordinator, worker:
        yield coordinator, worker


def refused(call: Callable[..., object], request: object, token: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10, metadata=(("authorization", f"Bearer {token}"),))
    error = caught.value
    assert isinstance(error, grpc.RpcError)
    return error


@pytest.mark.parametrize("case", COORDINATOR_CASES)
def test_the_coordinator_refuses_malformed_messages(case, channels, module_cluster):
    method, request, says = COORDINATOR_CASES[case]
    stub = pb_grpc.CoordinatorStub(channels[0])
    error = refused(getattr(stub, method), request, module_cluster.token)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert says in error.details()
    assert "Traceback" not in error.details()


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (pb.CancelTaskRequest(ref=pb.AttemptRef(task_id="x", attempt=1)), "ref.task_id"),
        (pb.CancelTaskRequest(ref=pb.AttemptRef(task_id=TASK, attempt=-5)), "ref.attempt"),
    ],
    ids=["bad-uuid", "negative-attempt"],
)
def test_the_worker_refuses_malformed_cancellations(request_, says, channels, module_cluster):
    stub = pb_grpc.WorkerStub(channels[1])
    error = refused(stub.CancelTask, request_, module_cluster.token)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in error.details()


def test_the_worker_refuses_a_hand_over_with_an_impossible_start(channels, module_cluster):
    attempt = pb.SubmitTaskRequest(ref=pb.AttemptRef(task_id=TASK, attempt=1), command="true")
    attempt.not_before.seconds = TOO_EARLY
    stub = pb_grpc.WorkerStub(channels[1])
    answer = stub.SubmitTasks(
        pb.SubmitTasksRequest(attempts=[attempt]),
        timeout=10,
        metadata=(("authorization", f"Bearer {module_cluster.token}"),),
    )
    assert not answer.results[0].accepted
    assert "not_before is out of range" in answer.results[0].reason


def test_nothing_was_recorded_and_the_cluster_still_runs(channels, module_cluster):
    for method, request, _ in COORDINATOR_CASES.values():
        stub = pb_grpc.CoordinatorStub(channels[0])
        refused(getattr(stub, method), request, module_cluster.token)
    with psycopg.connect(module_cluster.database_url, autocommit=True) as db:
        assert db.execute("SELECT id FROM workers ORDER BY id").fetchall() == [
            ("worker-1",),
            ("worker-2",),
        ]
        task_id = submit(module_cluster, "true")
        wait_status(db, task_id, "succeeded", cluster=module_cluster)
    for proc in module_cluster.processes():
        assert "Traceback" not in proc.log_text(), proc.describe()
