"""scripts/benchmark.sh and scripts/spawn_baseline.py: CLI parsing, figures, and whole runs
against a real scheduler, coordinator and worker."""

import ast
import contextlib
import importlib.util
import json
import os
import pty
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from devtools.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent


def _load_script(name: str) -> ModuleType:
    """scripts/ is not a package: load the file itself, so this test runs from any cwd."""
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"skiplock_scripts_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


benchmark = _load_script("benchmark")
spawn_baseline = _load_script("spawn_baseline")
WRAPPER = REPO / "scripts" / "benchmark.sh"
FLAGS = ("-h", "-u", "-n", "-d", "-p", "-t", "-c", "-r", "--json", "-b")
SUMMARY_PREFIXES = (
    "Submitted tasks: ", "Completed tasks: ", "Failed tasks: ", "Timed out tasks: ",
    "Submit duration: ", "Total duration: ", "Throughput (complete): ",
    "E2E latency min/avg/p95/max (ms): ", "Start delay p50/p95/p99/max (ms): ", "Early starts: ",
)


# ---------------------------------------------------------------- CLI parsing


def test_help_lists_every_flag_and_exits_zero() -> None:
    proc = subprocess.run([str(WRAPPER), "-h"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: benchmark.sh")
    for flag in FLAGS:
        assert f"{flag} " in proc.stdout or f"{flag}," in proc.stdout, flag


def test_unknown_flag_exits_nonzero_with_message() -> None:
    proc = subprocess.run([str(WRAPPER), "-x"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "unrecognized arguments: -x" in proc.stderr


@pytest.mark.parametrize("argv", [
    ["-n", "0"], ["-n", "ten"], ["-p", "0"], ["-d", "-1"], ["-t", "0"], ["-r", "-5"],
    ["-u", "localhost:8081"], ["-u", "http://[::1"], ["-n"],
])
def test_bad_values_exit_nonzero_with_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        benchmark.parse_args(argv)
    assert exc.value.code != 0
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_defaults_and_flags() -> None:
    assert benchmark.parse_args([]) == benchmark.Config(
        url="http://localhost:8081", count=100, delay=0.0, parallel=8, timeout=120.0,
        command="echo hello", rate=0.0, json_path=None)
    got = benchmark.parse_args(["-u", "http://h:9/", "-n", "5", "-d", "1.5", "-p", "3",
                                "-t", "9", "-c", "true", "-r", "50", "--json", "o.json"])
    assert got == benchmark.Config(url="http://h:9", count=5, delay=1.5, parallel=3,
                                   timeout=9.0, command="true", rate=50.0,
                                   json_path=Path("o.json"))


def test_spawn_baseline_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        spawn_baseline.parse_args(["-h"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(f"{flag} " in out for flag in ("-n", "-c", "-p", "--json"))


# ---------------------------------------------------------------- figures


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert benchmark.percentile(values, 50) == 50.0
    assert benchmark.percentile(values, 95) == 95.0
    assert benchmark.percentile(values, 99) == 99.0
    assert benchmark.percentile(values, 100) == 100.0
    assert benchmark.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert benchmark.percentile([7.0], 99) == 7.0
    assert benchmark.percentile([1.0, 2.0], 0) == 1.0
    with pytest.raises(ValueError):
        benchmark.percentile([], 50)


def test_summarize() -> None:
    assert benchmark.summarize([]) is None
    stats = benchmark.summarize([30.0, 10.0, 20.0, 40.0])
    assert stats == benchmark.Stats(min=10.0, avg=25.0, p50=20.0, p95=40.0, p99=40.0, max=40.0)


def test_build_report_uses_server_timestamps() -> None:
    t0 = 1_000.0
    tasks = [
        # succeeded: E2E 500 ms, start delay 100 ms
        benchmark.Task(0, submit_at=t0, task_id="a", status="succeeded", observed_at=t0 + 3,
                       scheduled_at=t0 + 0.1, started_at=t0 + 0.2, completed_at=t0 + 0.5),
        # succeeded but started 50 ms before its scheduled time: E2E 1500 ms
        benchmark.Task(1, submit_at=t0 + 0.5, task_id="b", status="succeeded",
                       observed_at=t0 + 4, scheduled_at=t0 + 0.6, started_at=t0 + 0.55,
                       completed_at=t0 + 2.0),
        benchmark.Task(2, submit_at=t0 + 0.6, task_id="c", status="failed", observed_at=t0 + 1,
                       scheduled_at=t0 + 0.6, started_at=t0 + 0.9, completed_at=None),
        benchmark.Task(3, submit_at=t0 + 0.7, error="submit: HTTP 500: boom"),
        benchmark.Task(4, submit_at=t0 + 0.8, task_id="e"),  # never terminal
    ]
    report = benchmark.build_report(tasks, submit_end=t0 + 1.0)
    assert (report.submitted, report.completed, report.failed, report.timed_out) == (5, 2, 2, 1)
    assert report.submit_duration_s == pytest.approx(1.0)
    assert report.total_duration_s == pytest.approx(4.0)
    assert report.throughput_tasks_per_s == pytest.approx(1.0)  # 2 tasks / 2.0 s
    assert report.e2e_latency_ms is not None
    assert report.e2e_latency_ms.min == pytest.approx(500.0)
    assert report.e2e_latency_ms.avg == pytest.approx(1000.0)
    assert report.e2e_latency_ms.max == pytest.approx(1500.0)
    assert report.start_delay_ms is not None
    assert report.start_delay_ms.max == pytest.approx(300.0)
    assert report.early_starts == 1
    assert not benchmark.report_ok(report)

    lines = benchmark.format_report(report)
    assert [line[: len(p)] for line, p in zip(lines, SUMMARY_PREFIXES, strict=True)] == list(
        SUMMARY_PREFIXES)
    assert lines[4] == "Submit duration: 1.00 s"
    assert lines[6] == "Throughput (complete): 1.0 tasks/s"
    assert lines[7] == "E2E latency min/avg/p95/max (ms): 500.0 / 1000.0 / 1500.0 / 1500.0"
    assert lines[9] == "Early starts: 1"


def test_empty_latencies_print_na() -> None:
    report = benchmark.build_report([benchmark.Task(0, submit_at=5.0)], submit_end=6.0)
    lines = benchmark.format_report(report)
    assert lines[7] == "E2E latency min/avg/p95/max (ms): n/a / n/a / n/a / n/a"
    assert lines[6] == "Throughput (complete): 0.0 tasks/s"


def test_parse_timestamp() -> None:
    assert benchmark.parse_timestamp(None) is None
    assert benchmark.parse_timestamp("1970-01-01T00:00:01.5Z") == 1.5
    assert benchmark.parse_timestamp("1970-01-01T01:00:02+01:00") == 2.0
    with pytest.raises(ValueError):
        benchmark.parse_timestamp("yesterday")


# ---------------------------------------------------------------- against a real cluster


@pytest.fixture(scope="module")
def running(module_database_url: str, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    """A scheduler, a coordinator and one worker with 4 slots."""
    cluster = Cluster(module_database_url, tmp_path_factory.mktemp("bench"))
    try:
        cluster.start(workers=1, slots=4)
        yield cluster
    finally:
        cluster.stop()


def _summary(out: str) -> dict[str, str]:
    lines = out.strip().splitlines()
    assert len(lines) == len(SUMMARY_PREFIXES), out
    return {p.rstrip(": "): line[len(p):] for p, line in zip(SUMMARY_PREFIXES, lines, strict=True)}


def test_closed_loop_run(running: Cluster, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "bench.json"
    code = benchmark.main(["-u", running.scheduler_url, "-n", "30", "-p", "4", "-d", "0.2",
                           "-t", "60", "--json", str(out_json)])
    summary = _summary(capsys.readouterr().out)
    assert code == 0, summary
    assert summary["Submitted tasks"] == "30"
    assert summary["Completed tasks"] == "30"
    assert summary["Failed tasks"] == summary["Timed out tasks"] == summary["Early starts"] == "0"
    figures = json.loads(out_json.read_text())
    assert figures["completed"] == 30
    assert figures["config"]["parallel"] == 4
    # -d 0.2: a task cannot complete sooner than 200 ms after it was submitted
    assert figures["e2e_latency_ms"]["min"] >= 200.0
    assert figures["start_delay_ms"]["min"] >= 0.0
    assert figures["open_loop"] is None


def test_open_loop_run(running: Cluster, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "bench.json"
    code = benchmark.main(["-u", running.scheduler_url, "-n", "20", "-r", "50", "-p", "4",
                           "-t", "60", "--json", str(out_json)])
    assert code == 0, capsys.readouterr()
    figures = json.loads(out_json.read_text())
    assert figures["completed"] == 20
    assert figures["open_loop"]["target_rate"] == 50.0
    # 20 sends paced at 50/s span 19/50 = 0.38 s, so the submit phase cannot be faster
    assert figures["submit_duration_s"] >= 0.37


def test_failing_commands_exit_nonzero(running: Cluster,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = benchmark.main(["-u", running.scheduler_url, "-n", "6", "-p", "2", "-t", "60",
                           "-c", "exit 3"])
    assert code == 1
    assert "Failed tasks: 6" in capsys.readouterr().out


def test_rejected_submissions_count_as_failed(running: Cluster,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = benchmark.main(["-u", running.scheduler_url, "-n", "3", "-c", "  ", "-t", "5"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Failed tasks: 3" in captured.out
    assert "error: submit: HTTP 422" in captured.err
    assert "finished" not in captured.err  # no progress drawn where stderr is not a terminal


def test_unreachable_scheduler_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # bound, not listening: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code = benchmark.main(["-u", f"http://127.0.0.1:{port}", "-n", "1"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"benchmark: cannot reach scheduler at http://127.0.0.1:{port}")


def test_progress_shows_on_a_terminal_and_the_figures_stay_as_they_are(running: Cluster) -> None:
    controller, terminal = pty.openpty()
    shown: list[bytes] = []

    def read_terminal() -> None:
        with contextlib.suppress(OSError):  # EIO once the last writer has closed it
            while chunk := os.read(controller, 4096):
                shown.append(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    try:
        proc = subprocess.run([str(WRAPPER), "-u", running.scheduler_url, "-n", "40", "-p", "2",
                               "-d", "1", "-t", "60"],
                              stdout=subprocess.PIPE, stderr=terminal, text=True, timeout=120)
    finally:
        os.close(terminal)
        reader.join(10)
        os.close(controller)
    assert proc.returncode == 0, proc.stdout
    assert _summary(proc.stdout)["Completed tasks"] == "40"
    drawn = b"".join(shown).decode(errors="replace")
    assert "submitted" in drawn and "finished" in drawn, drawn


def test_scripts_do_not_import_the_tests() -> None:
    for path in (REPO / "scripts").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not [n for n in names if n.split(".")[0] == "tests"], f"{path.name}: {names}"


def test_spawn_baseline_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "spawn.json"
    assert spawn_baseline.main(["-n", "4", "-p", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "Raw spawn (threads)", "Raw spawn (asyncio)", "Raw spawn (pidfd)"]
    figures = json.loads(out_json.read_text())
    assert figures["failures"] == 0
    assert all(figures[f"{m}_tasks_per_s"] > 0 for m in ("threads", "asyncio", "pidfd"))
