"""schemathesis against a real scheduler process (with API tokens), over every operation of its
OpenAPI document: generated and mutated requests, coverage of the schema's edges, and stateful
sequences that follow the document's links (create a task, then read, cancel and retry it).

Every check runs but one: no server error, every status, header and body as documented, nothing
the schema forbids accepted, authentication enforced. Left out is "schema-valid request
rejected": whether a cron expression or a time zone name exists, the schema cannot say. Left
out too is GET /events, a stream that never ends (tests/test_events.py reads it).
The run is bounded by its example count and a time budget; the seed is fixed, so a failure
reproduces (the output says how).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.cluster import Cluster

TOKEN = "schemathesis-" + "c3" * 16
BUDGET_SECONDS = 150
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def scheduler(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = Cluster(
        module_database_url,
        tmp_path_factory.mktemp("schemathesis"),
        env={"SKIPLOCK_API_TOKEN": TOKEN},
    )
    try:
        cluster.start_scheduler()
        yield cluster.scheduler_url
    finally:
        cluster.stop()


def test_every_operation_answers_as_documented(scheduler: str, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "--config-file", str(CONFIG), "run", f"{scheduler}/openapi.json",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",
        # An event stream never ends, so no answer would arrive whole: tests/test_events.py
        "--exclude-path", "/events",
        "--max-examples", "5",
        "--seed", "20261130",
        "--max-time", str(BUDGET_SECONDS),
        "--request-timeout", "30",
        "--no-color",
        "--report-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=BUDGET_SECONDS + 120, cwd=tmp_path
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "✅ Stateful" in output, output
    assert " 0 passed" not in output and "passed" in output, output
