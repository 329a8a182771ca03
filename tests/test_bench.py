"""`make bench` stays runnable: a tiny sitting of every mode against real services. No timing is
asserted; the figures are a benchmark's, not a test's."""

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_make_bench_tiny_prints_every_component(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    args = (f"-n 20 --batch-size 7 --delay-count 20 --steady-count 20 --output-root {tmp_path}"
            f" --json {figures}")
    proc = subprocess.run(["make", "--no-print-directory", "bench", f"BENCH_ARGS={args}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "ceiling (Popen thread pool, c=4, 20 commands): " in out
    assert "ratio to the ceiling" in out
    assert "batch (7 a request submission, 20 tasks)" in out
    for name in ("scheduler", "coordinator-1", "worker-1", "worker-2", "commands run",
                 "postgres (backends of the database)", "control plane"):
        assert name in out, name
    data = json.loads(figures.read_text())
    assert data["ceiling_tasks_per_s"] > 0
    assert [m["mode"] for m in data["modes"]] == ["drain", "batch", "delay", "steady"]
    for mode in data["modes"]:
        assert mode["completed"] == mode["tasks"]
        assert mode["early_starts"] == 0
        # Every component did some work, PostgreSQL's backends included (found by pid).
        assert mode["cpu_ms_per_task"]["postgres (backends of the database)"] > 0
        assert mode["cpu_ms_per_task"]["coordinator-1"] > 0
        assert mode["start_delay_ms"]["p50"] >= 0
        if mode["mode"] in ("delay", "steady"):
            stages = mode["delay_stages_ms"]
            assert set(stages) == {"to_claim_p50", "to_claim_p99", "claim_to_start_p50",
                                   "claim_to_start_p99"}
            # Never early: nothing is claimed before it is due, nor started before its claim.
            assert stages["to_claim_p50"] >= 0 and stages["claim_to_start_p50"] >= 0
