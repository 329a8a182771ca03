"""What a well-formed message of the contract is, checked where it enters a service.

Each function returns the first problem it finds as a sentence naming the field (the caller
answers INVALID_ARGUMENT, or refuses the attempt, with it), or "" when the message is fine. Limits
follow the database's own (store/migrations), so nothing malformed reaches a query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from google.protobuf.message import Message

from common.limits import (
    CPU_LIMIT_BOUNDS,
    MAX_COMMAND_BYTES,
    MEMORY_LIMIT_BOUNDS,
    OPEN_FILES_LIMIT_BOUNDS,
    cwd_problem,
    env_problem,
    exit_codes_problem,
    is_wildcard_host,
)
from common.output import MAX_OUTPUT_CAP_BYTES
from common.routing import MAX_QUEUES, labels_problem, queue_problem
from proto import skiplock_pb2 as pb

MAX_WORKER_ID = 200
MAX_ADDRESS = 300
MAX_SLOTS = 10_000
MAX_HELD = 10_000
MAX_REPORTS = 1_000
MAX_PATH_BYTES = 4096
MAX_DETAIL_BYTES = 65536
MAX_ATTEMPT = 2**31 - 1
# Nothing runs longer than the API lets it: 31 days.
MAX_TIMEOUT_MS = 31 * 86400 * 1000
# google.protobuf.Timestamp's own range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TERMINAL_OR_RUNNING = frozenset(pb.AttemptState.values()) - {pb.ATTEMPT_STATE_UNSPECIFIED}


def text_problem(value: str, field: str, max_bytes: int, min_bytes: int = 0) -> str:
    size = len(value.encode())
    if not min_bytes <= size <= max_bytes:
        return f"{field} must be {min_bytes}-{max_bytes} bytes, not {size}"
    if "\x00" in value:
        return f"{field} must not contain NUL characters"
    return ""


def name_problem(value: str, field: str, max_chars: int) -> str:
    """Names and addresses: printable, no spaces around, no control characters."""
    if not 1 <= len(value) <= max_chars:
        return f"{field} must be 1-{max_chars} characters"
    if not value.isprintable() or value != value.strip():
        return f"{field} must be printable, without surrounding spaces"
    return ""


def ref_problem(ref: pb.AttemptRef, field: str = "ref") -> str:
    if not _CANONICAL_UUID.fullmatch(ref.task_id):
        return f"{field}.task_id must be a UUID in canonical form, got {ref.task_id[:40]!r}"
    if not 1 <= ref.attempt <= MAX_ATTEMPT:
        return f"{field}.attempt must be >= 1, got {ref.attempt}"
    return ""


def timestamp_problem(message: Message, field: str) -> str:
    if not message.HasField(field):
        return ""
    stamp = getattr(message, field)
    if not MIN_SECONDS <= stamp.seconds <= MAX_SECONDS or not 0 <= stamp.nanos < 10**9:
        return f"{field} is out of range (seconds {stamp.seconds}, nanos {stamp.nanos})"
    return ""


def first(*problems: str) -> str:
    return next((p for p in problems if p), "")


def address_problem(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if (
        not sep
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or is_wildcard_host(host)
        or name_problem(address, "address", MAX_ADDRESS)
    ):
        return f"address {address[:80]!r} is not a reachable host:port"
    return ""


def heartbeat_problem(request: pb.HeartbeatRequest) -> str:
    if len(request.held) > MAX_HELD:
        return f"held lists more than {MAX_HELD} attempts"
    return first(
        name_problem(request.worker_id, "worker_id", MAX_WORKER_ID),
        address_problem(request.address),
        "" if 0 <= request.slots <= MAX_SLOTS else f"slots must be 0-{MAX_SLOTS}",
        "" if 0 <= request.free_slots <= request.slots else "free_slots must be 0-slots",
        "" if len(request.queues) <= MAX_QUEUES else f"queues lists more than {MAX_QUEUES}",
        *(queue_problem(name) for name in request.queues),
        labels_problem(request.labels),
        *(ref_problem(ref, f"held[{i}]") for i, ref in enumerate(request.held)),
    )


def report_problem(report: pb.StatusReport, where: str) -> str:
    exit_code_ok = not report.HasField("exit_code") or 0 <= report.exit_code <= 255
    return first(
        ref_problem(report.ref, f"{where}.ref"),
        name_problem(report.worker_id, f"{where}.worker_id", MAX_WORKER_ID),
        "" if report.state in _TERMINAL_OR_RUNNING else f"{where}.state is not a known state",
        timestamp_problem(report, "started_at"),
        timestamp_problem(report, "finished_at"),
        "" if exit_code_ok else f"{where}.exit_code must be 0-255",
        text_problem(report.output_path, f"{where}.output_path", MAX_PATH_BYTES),
        text_problem(report.detail, f"{where}.detail", MAX_DETAIL_BYTES),
    )


def delta_problem(d: pb.OutputDelta) -> str:
    """What is wrong with one output delta: its bytes must be the capped copy's head (up to the
    cap) and tail (the last bytes up to `size`)."""
    if not 1 <= d.cap <= MAX_OUTPUT_CAP_BYTES:
        return f"cap must be 1-{MAX_OUTPUT_CAP_BYTES}"
    if not d.head and not d.tail:
        return "carries no bytes"
    # The head's bytes end at the cap when a tail follows, else at size.
    head_end = d.cap if d.tail else d.size
    if d.head and not (d.head_offset >= 0 and d.head_offset + len(d.head) == head_end <= d.cap):
        return "head must end at size, or at cap when a tail follows"
    if d.tail and not (d.cap <= d.tail_offset and len(d.tail) <= d.cap):
        return "tail must hold at most cap bytes from cap or later"
    if d.tail and d.tail_offset + len(d.tail) != d.size:
        return "tail must end at size"
    return ""


def outputs_problem(deltas: Sequence[pb.OutputDelta]) -> str:
    """What is wrong with the output deltas of a ReportStatus call ('' when nothing)."""
    if len(deltas) > MAX_REPORTS:
        return "too many output deltas in one call"
    for i, d in enumerate(deltas):
        problem = ref_problem(d.ref, f"outputs[{i}].ref") or delta_problem(d)
        if problem:
            return f"output delta for {d.ref.task_id[:64]!r} attempt {d.ref.attempt}: {problem}"
    return ""


def report_status_problem(request: pb.ReportStatusRequest) -> str:
    if len(request.reports) > MAX_REPORTS:
        return f"send at most {MAX_REPORTS} reports per call"
    return first(
        *(report_problem(r, f"reports[{i}]") for i, r in enumerate(request.reports)),
        outputs_problem(request.outputs),
    )


def limits_problem(request: pb.SubmitTaskRequest) -> str:
    """A resource limit outside its bounds ('' when none is)."""
    given = (
        ("memory_limit_bytes", request.HasField("memory_limit_bytes"), MEMORY_LIMIT_BOUNDS),
        ("cpu_limit_seconds", request.HasField("cpu_limit_seconds"), CPU_LIMIT_BOUNDS),
        ("open_files_limit", request.HasField("open_files_limit"), OPEN_FILES_LIMIT_BOUNDS),
    )
    for name, present, (low, high) in given:
        if present and not low <= getattr(request, name) <= high:
            return f"{name} must be between {low} and {high}"
    return ""


def attempt_problem(request: pb.SubmitTaskRequest) -> str:
    """Why one attempt of a hand-over cannot be run as sent; the worker refuses it with this."""
    return first(
        ref_problem(request.ref),
        text_problem(request.command, "command", MAX_COMMAND_BYTES, min_bytes=1),
        "" if 0 <= request.timeout_ms <= MAX_TIMEOUT_MS else "timeout_ms is out of range",
        "" if request.output_cap_bytes >= 0 else "output_cap_bytes must not be negative",
        timestamp_problem(request, "not_before"),
        env_problem(dict(request.env)),
        cwd_problem(request.cwd) if request.cwd else "",
        limits_problem(request),
        exit_codes_problem(list(request.success_exit_codes))
        if request.success_exit_codes
        else "",
    )


def cancel_problem(request: pb.CancelTaskRequest) -> str:
    return ref_problem(request.ref)
