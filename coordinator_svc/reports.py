"""Worker messages -> database: heartbeats (with reconciliation) and status reports."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from proto import skiplock_pb2 as pb
from proto.timestamps import from_timestamp
from store import dispatch
from store.models import (
    AttemptEnd,
    AttemptKey,
    AttemptStart,
    EndedAttempt,
    OutputDelta,
    StartedAttempt,
)
from store.vocabulary import AttemptStatus, EndReason

log = logging.getLogger(__name__)

# How each terminal worker state ends an attempt: (attempt status, reason).
TERMINAL_STATES: dict[int, tuple[AttemptStatus, EndReason | None]] = {
    pb.ATTEMPT_STATE_SUCCEEDED: (AttemptStatus.SUCCEEDED, None),
    pb.ATTEMPT_STATE_FAILED: (AttemptStatus.FAILED, EndReason.EXIT_CODE),
    pb.ATTEMPT_STATE_TIMED_OUT: (AttemptStatus.FAILED, EndReason.TIMEOUT),
    pb.ATTEMPT_STATE_CANCELLED: (AttemptStatus.CANCELLED, EndReason.CANCELLED),
    pb.ATTEMPT_STATE_SHUTDOWN: (AttemptStatus.FAILED, EndReason.WORKER_SHUTDOWN),
    pb.ATTEMPT_STATE_SPAWN_FAILED: (AttemptStatus.FAILED, EndReason.SPAWN_FAILED),
}


@dataclass(frozen=True)
class HeartbeatOutcome:
    revoked: list[AttemptKey]
    # attempts the worker had lost track of, now ended and requeued
    recovered: list[EndedAttempt]


@dataclass(frozen=True)
class ReportsOutcome:
    stale: list[pb.AttemptRef]  # reports' attempts that changed nothing
    started: list[StartedAttempt]
    ended: list[EndedAttempt]


def attempt_key(ref: pb.AttemptRef) -> AttemptKey | None:
    try:
        return AttemptKey(uuid.UUID(ref.task_id), ref.attempt)
    except ValueError:
        return None


def end_from_report(report: pb.StatusReport, key: AttemptKey) -> AttemptEnd | None:
    mapped = TERMINAL_STATES.get(report.state)
    if mapped is None:
        return None
    status, reason = mapped
    return AttemptEnd(
        task_id=key.task_id,
        attempt=key.attempt,
        status=status,
        reason=reason,
        worker_id=report.worker_id,
        exit_code=report.exit_code if report.HasField("exit_code") else None,
        started_at=from_timestamp(report, "started_at"),
        finished_at=from_timestamp(report, "finished_at"),
        output_path=report.output_path or None,
        detail=report.detail or None,
    )


def output_deltas(messages: list[pb.OutputDelta]) -> list[OutputDelta]:
    """The deltas to merge: one per attempt (the one reaching furthest), none for a ref that
    names no attempt."""
    deltas: dict[AttemptKey, OutputDelta] = {}
    for message in messages:
        key = attempt_key(message.ref)
        if key is None or (key in deltas and deltas[key].size >= message.size):
            continue
        deltas[key] = OutputDelta(
            task_id=key.task_id,
            attempt=key.attempt,
            worker_id=message.worker_id,
            head_offset=message.head_offset,
            head=message.head,
            tail_offset=message.tail_offset,
            tail=message.tail,
            size=message.size,
            cap=message.cap,
        )
    return list(deltas.values())


async def record_reports(
    conn: AsyncConnection[Any],
    reports: list[pb.StatusReport],
    deltas: list[pb.OutputDelta] | None = None,
) -> ReportsOutcome:
    """Apply a batch: starts, then output and endings in one statement (so an attempt's output
    is stored no later than its end; a worker sends an attempt's start before its end)."""
    starts: dict[AttemptKey, AttemptStart] = {}
    ends: dict[AttemptKey, AttemptEnd] = {}
    refs: dict[AttemptKey, pb.AttemptRef] = {}
    stale: list[pb.AttemptRef] = []
    for report in reports:
        key = attempt_key(report.ref)
        end = end_from_report(report, key) if key is not None else None
        if key is not None and report.state == pb.ATTEMPT_STATE_RUNNING:
            started = from_timestamp(report, "started_at")
            starts.setdefault(
                key,
                AttemptStart(
                    key.task_id,
                    key.attempt,
                    report.worker_id,
                    started or datetime.now(UTC),
                    report.output_path,
                ),
            )
        elif key is not None and end is not None:
            ends[key] = end
        else:
            stale.append(report.ref)
            continue
        refs[key] = report.ref
    recorded = await dispatch.mark_attempts_running(conn, list(starts.values()))
    kept = {s.key for s in recorded if s.keep}
    ended = await dispatch.end_attempts(conn, list(ends.values()), output_deltas(deltas or []))
    stale += [
        refs[key]
        for key in starts.keys() | ends.keys()
        if key not in ended and (key in ends or key not in kept)
    ]
    return ReportsOutcome(stale, recorded, list(ended.values()))


async def record_heartbeat(
    conn: AsyncConnection[Any], request: pb.HeartbeatRequest, handover_grace: float
) -> HeartbeatOutcome:
    """Refresh the worker and reconcile what it holds with what the database says is its own."""
    await dispatch.upsert_worker(
        conn,
        request.worker_id,
        request.address,
        request.slots,
        request.draining,
        list(request.queues),
        dict(request.labels),
    )
    held = [k for k in (attempt_key(ref) for ref in request.held) if k is not None]
    revoked = await dispatch.revoked_attempts(conn, request.worker_id, held)
    vanished = await dispatch.vanished_attempts(conn, request.worker_id, held, handover_grace)
    # Never received (coordinator died mid hand-over), or lost while running (the worker
    # restarted).
    recovered = await dispatch.end_attempts(
        conn,
        [
            AttemptEnd(
                key.task_id,
                key.attempt,
                AttemptStatus.FAILED,
                EndReason.DISPATCH_LOST
                if status == AttemptStatus.DISPATCHED
                else EndReason.WORKER_LOST,
            )
            for key, status in vanished
        ],
    )
    return HeartbeatOutcome(revoked=revoked, recovered=list(recovered.values()))
