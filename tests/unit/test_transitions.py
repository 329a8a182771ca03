"""The coordinator's transition lines: an ending that is also how an attempt's start became
known is one `task ended` line carrying the start delay; a start reported on its own has its
`task started` line, and its ending then carries no start delay."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from structlog.testing import capture_logs

from coordinator_svc import transitions
from store.models import EndedAttempt

DUE = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
ENDED = EndedAttempt(
    uuid.uuid4(), 1, "worker-1", None, "succeeded", None, 0,
    started_at=DUE + timedelta(milliseconds=4), ended_at=DUE + timedelta(milliseconds=6),
    task_status="succeeded", run_at=DUE, start_unrecorded=True,
)  # fmt: skip


def logged(*steps: Any) -> list[tuple[str, float | None]]:
    with capture_logs() as logs:
        for step, arg in steps:
            step([arg])
    return [(e["event"], e.get("start_delay_seconds")) for e in logs]


def test_a_start_learnt_from_the_ending_is_on_the_ending_line():
    assert logged((transitions.ended, ENDED)) == [("task ended", 0.004)]


def test_a_start_reported_before_has_its_own_line_and_the_ending_none():
    start = ENDED.as_started()
    reported = replace(ENDED, start_unrecorded=False)
    assert logged((transitions.started, start), (transitions.ended, reported)) == [
        ("task started", 0.004),
        ("task ended", None),
    ]
