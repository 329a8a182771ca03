"""The worker's Prometheus metrics (served with --metrics-port)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from proto import skiplock_pb2 as pb

SLOTS = Gauge("skiplock_worker_slots", "Attempts this worker runs at once at most (--slots)")
SLOTS_BUSY = Gauge("skiplock_worker_slots_busy", "Slots running a command now")
ATTEMPTS_FINISHED = Counter(
    "skiplock_worker_attempts_finished",
    "Attempts this worker finished, by final state (succeeded, failed, timed_out, cancelled, "
    "shutdown, spawn_failed)",
    ["state"],
)
HEARTBEAT_FAILURES = Counter(
    "skiplock_worker_heartbeat_failures", "Heartbeats that no coordinator answered"
)


def watch_slots(slots: int, free_slots: Callable[[], int]) -> None:
    SLOTS.set(slots)
    SLOTS_BUSY.set_function(lambda: slots - free_slots())


def finished(state: pb.AttemptState.ValueType) -> None:
    _finished_in(state).inc()


@functools.cache
def _finished_in(state: pb.AttemptState.ValueType) -> Counter:
    """The counter of one final state, looked up once (this runs for every command)."""
    return ATTEMPTS_FINISHED.labels(
        pb.AttemptState.Name(state).removeprefix("ATTEMPT_STATE_").lower()
    )
