"""The vocabulary enums say exactly what the DDL's CHECK lists allow, and the policies decided
on them (which reasons use up a retry, which statuses are unfinished) are the documented ones."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import psycopg
import pytest

from common.limits import MAX_COMMAND_BYTES
from store.vocabulary import (
    DEFAULT_LOST_RETRIES,
    UNFINISHED_RUN_STATUSES,
    UNFINISHED_TASK_STATUSES,
    AttemptStatus,
    EndReason,
    EventKind,
    OverlapPolicy,
    RetryBudget,
    TaskStatus,
    TickOutcome,
    sql_list,
)

# A constraint that only lists a column's allowed words, as pg_get_constraintdef prints it.
_WORD_LIST = re.compile(r"CHECK \(\(\(?(\w+) = ANY \(ARRAY\[(.*)\]\)\)\)?\)")


def check_lists(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    """table.column -> the words its CHECK allows, for every word-list constraint."""
    rows = conn.execute(
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
    ).fetchall()
    found = {}
    for table, definition in rows:
        match = _WORD_LIST.fullmatch(definition)
        if match:
            words = re.findall(r"'([^']*)'::text", match.group(2))
            found[f"{table}.{match.group(1)}"] = set(words)
    return found


@pytest.mark.parametrize(
    ("column", "enum"),
    [
        ("tasks.status", TaskStatus),
        ("attempts.status", AttemptStatus),
        ("attempts.reason", EndReason),
        ("schedule_ticks.outcome", TickOutcome),
        ("schedules.overlap", OverlapPolicy),
        ("events.kind", EventKind),
    ],
)
def test_each_enum_is_its_columns_check_list(db, column: str, enum: type[StrEnum]) -> None:
    assert check_lists(db)[column] == {word.value for word in enum}


def test_every_word_list_in_the_schema_has_its_enum(db) -> None:
    assert set(check_lists(db)) == {
        "tasks.status",
        "attempts.status",
        "attempts.reason",
        "schedule_ticks.outcome",
        "schedules.overlap",
        "events.kind",
    }


def test_the_command_limit_is_the_schemas(db) -> None:
    rows = db.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'c' AND pg_get_constraintdef(oid) LIKE '%%octet_length(command)%%'"
    ).fetchall()
    assert len(rows) == 2  # tasks and schedules
    for (definition,) in rows:
        assert f"<= {MAX_COMMAND_BYTES})" in definition, definition


def test_the_reasons_that_use_up_a_retry_are_the_documented_ones() -> None:
    # docs/RELIABILITY.md, the reasons table.
    assert {r for r in EndReason if r.uses_retry} == {
        EndReason.EXIT_CODE,
        EndReason.TIMEOUT,
        EndReason.WORKER_SHUTDOWN,
        EndReason.SPAWN_FAILED,
        EndReason.WORKER_LOST,
    }


def test_lost_work_is_what_the_worker_lost_or_stopped_under_a_running_command() -> None:
    # docs/RELIABILITY.md, "Lost work".
    assert {r for r in EndReason if r.budget == RetryBudget.LOST} == {
        EndReason.WORKER_LOST,
        EndReason.WORKER_SHUTDOWN,
    }
    assert {r for r in EndReason if r.budget == RetryBudget.FREE} == {
        r for r in EndReason if not r.uses_retry
    }
    assert DEFAULT_LOST_RETRIES == 0


def test_unfinished_runs_are_the_statuses_a_task_can_leave() -> None:
    assert UNFINISHED_TASK_STATUSES == (
        TaskStatus.WAITING,
        TaskStatus.QUEUED,
        TaskStatus.DISPATCHED,
        TaskStatus.RUNNING,
    )
    # a schedule's run never waits: the statuses its partial indexes list (migration 002)
    assert sql_list(UNFINISHED_RUN_STATUSES) == "('queued', 'dispatched', 'running')"
