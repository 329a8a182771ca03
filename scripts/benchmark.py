"""Load-test a running skiplock scheduler over HTTP.

Submits COUNT one-off tasks (closed loop with PARALLEL submitters, or open loop at RATE/s),
then polls only the outstanding tasks until each is terminal or TIMEOUT passes. Latency
figures come from the scheduler's own timestamps so the poll cadence cannot distort them:

  E2E latency  = completed_at (server) - submit instant (client wall clock, same machine)
  Start delay  = started_at - scheduled_at (both server)

Exit status: 0 when every task succeeded on time, 1 when any task failed, timed out or
started before its scheduled time, 2 for usage errors or an unreachable scheduler.
"""

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from rich.progress import Progress

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools.progress import terminal_progress  # noqa: E402

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
POLL_PAUSE_S = 0.5  # pause between status sweeps; latencies use server times, not this
# Outstanding tasks are polled this many per GET /tasks request.
POLL_BATCH = 200
REQUEST_TIMEOUT_S = 30.0
RATE_TOLERANCE = 0.95  # warn when the open-loop rate falls below 95% of the target


@dataclass(frozen=True)
class Config:
    url: str
    count: int
    delay: float
    parallel: int
    timeout: float
    command: str
    rate: float
    json_path: Path | None
    batch: int = 1


@dataclass
class Task:
    """One submission and, once polled to a terminal state, its server timestamps."""

    index: int
    submit_at: float = 0.0  # client wall clock (epoch seconds) just before the POST
    task_id: str | None = None
    status: str | None = None  # terminal status, or None while outstanding
    error: str | None = None  # submit or status error that made this task count as failed
    observed_at: float | None = None  # client wall clock when the terminal status was seen
    scheduled_at: float | None = None  # server timestamps, epoch seconds
    started_at: float | None = None
    completed_at: float | None = None


@dataclass(frozen=True)
class Stats:
    min: float
    avg: float
    p50: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class OpenLoop:
    target_rate: float
    achieved_rate: float
    max_lag_ms: float


@dataclass(frozen=True)
class Report:
    submitted: int
    completed: int
    failed: int
    timed_out: int
    submit_duration_s: float
    total_duration_s: float
    throughput_tasks_per_s: float
    e2e_latency_ms: Stats | None
    start_delay_ms: Stats | None
    early_starts: int
    open_loop: OpenLoop | None


class Clock:
    """Wall-clock instants derived from one monotonic anchor, so intervals never jump."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.perf_counter()

    def mono(self) -> float:
        return time.perf_counter()

    def wall(self) -> float:
        return self._wall0 + (time.perf_counter() - self._mono0)


# ---------------------------------------------------------------- arguments


def _base_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"must start with http:// or https://, got {text!r}")
    try:
        parsed = yarl.URL(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid URL {text!r}: {exc}") from None
    if not parsed.host:
        raise argparse.ArgumentTypeError(f"invalid URL {text!r}: no host")
    return text.rstrip("/")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmark.sh",
        description="Submit tasks to a running skiplock scheduler and report throughput "
        "and latency from the scheduler's own timestamps.",
    )
    parser.add_argument("-u", dest="url", metavar="URL", type=_base_url,
                        default="http://localhost:8081",
                        help="scheduler base URL (default: %(default)s)")
    parser.add_argument("-n", dest="count", metavar="COUNT", type=_positive_int, default=100,
                        help="number of tasks to submit (default: %(default)s)")
    parser.add_argument("-d", dest="delay", metavar="DELAY", type=_non_negative_float,
                        default=0.0, help="delay_seconds for each task (default: %(default)s)")
    parser.add_argument("-p", dest="parallel", metavar="PARALLEL", type=_positive_int,
                        default=8, help="concurrent submitters / requests in flight "
                        "(default: %(default)s)")
    parser.add_argument("-t", dest="timeout", metavar="TIMEOUT", type=_positive_float,
                        default=120.0, help="seconds to wait for completion after the last "
                        "submit (default: %(default)s)")
    parser.add_argument("-c", dest="command", metavar="COMMAND", default="echo hello",
                        help="shell command each task runs (default: %(default)r)")
    parser.add_argument("-r", dest="rate", metavar="RATE", type=_non_negative_float,
                        default=0.0, help="open-loop submissions per second; 0 submits as "
                        "fast as PARALLEL allows (default: %(default)s)")
    parser.add_argument("--json", dest="json_path", metavar="FILE", type=Path, default=None,
                        help="also write the figures as JSON to FILE")
    parser.add_argument("-b", dest="batch", metavar="BATCH", type=_positive_int, default=1,
                        help="tasks per request: above 1, POST /tasks/batch instead of "
                        "POST /schedule (as fast as possible only) (default: %(default)s)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Config:
    ns = build_parser().parse_args(argv)
    return Config(url=ns.url, count=ns.count, delay=ns.delay,
                  parallel=ns.parallel, timeout=ns.timeout, command=ns.command,
                  rate=ns.rate, json_path=ns.json_path, batch=ns.batch)


# ---------------------------------------------------------------- figures


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: always a value that was actually observed."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def summarize(values: Sequence[float]) -> Stats | None:
    if not values:
        return None
    ordered = sorted(values)
    return Stats(min=ordered[0], avg=sum(ordered) / len(ordered),
                 p50=percentile(ordered, 50), p95=percentile(ordered, 95),
                 p99=percentile(ordered, 99), max=ordered[-1])


def build_report(tasks: Sequence[Task], submit_end: float,
                 open_loop: OpenLoop | None = None) -> Report:
    """Figures for a finished run. submit_end is the client wall clock after the last POST."""
    succeeded = [t for t in tasks if t.status == "succeeded"]
    failed = [t for t in tasks if t.error is not None or t.status in ("failed", "cancelled")]
    timed_out = [t for t in tasks if t.status is None and t.error is None]
    first_submit = min((t.submit_at for t in tasks), default=submit_end)

    observed = [t.observed_at for t in tasks if t.observed_at is not None]
    last_observed = max(observed, default=submit_end)

    done_at = [t.completed_at for t in succeeded if t.completed_at is not None]
    span = max(done_at) - first_submit if done_at else 0.0
    throughput = len(succeeded) / span if span > 0 else 0.0

    e2e = [(t.completed_at - t.submit_at) * 1000.0 for t in succeeded
           if t.completed_at is not None]
    delays = [(t.started_at - t.scheduled_at) * 1000.0 for t in tasks
              if t.started_at is not None and t.scheduled_at is not None]
    return Report(
        submitted=len(tasks), completed=len(succeeded), failed=len(failed),
        timed_out=len(timed_out), submit_duration_s=submit_end - first_submit,
        total_duration_s=last_observed - first_submit, throughput_tasks_per_s=throughput,
        e2e_latency_ms=summarize(e2e), start_delay_ms=summarize(delays),
        early_starts=sum(1 for d in delays if d < 0), open_loop=open_loop,
    )


def _ms(stats: Stats | None, fields: Sequence[str]) -> str:
    if stats is None:
        return " / ".join("n/a" for _ in fields)
    return " / ".join(f"{getattr(stats, f):.1f}" for f in fields)


def format_report(report: Report) -> list[str]:
    return [
        f"Submitted tasks: {report.submitted}",
        f"Completed tasks: {report.completed}",
        f"Failed tasks: {report.failed}",
        f"Timed out tasks: {report.timed_out}",
        f"Submit duration: {report.submit_duration_s:.2f} s",
        f"Total duration: {report.total_duration_s:.2f} s",
        f"Throughput (complete): {report.throughput_tasks_per_s:.1f} tasks/s",
        "E2E latency min/avg/p95/max (ms): "
        + _ms(report.e2e_latency_ms, ("min", "avg", "p95", "max")),
        "Start delay p50/p95/p99/max (ms): "
        + _ms(report.start_delay_ms, ("p50", "p95", "p99", "max")),
        f"Early starts: {report.early_starts}",
    ]


def report_ok(report: Report) -> bool:
    return report.failed == 0 and report.timed_out == 0 and report.early_starts == 0


def report_json(report: Report, config: Config) -> dict[str, Any]:
    settings = asdict(config)
    settings["json_path"] = str(config.json_path) if config.json_path else None
    return {"config": settings, **asdict(report)}


# ---------------------------------------------------------------- HTTP


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# What a failed request raises: the connection, the protocol or the request timeout.
REQUEST_ERRORS = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True)
class Reply:
    status: int
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.text)

    def error(self) -> str:
        return f"HTTP {self.status}: {self.text[:200].strip()}"


class Client:
    """The scheduler's HTTP API over a pool of PARALLEL keep-alive connections.

    aiohttp, because the client shares the machine with what it measures: it costs about a
    fifth of the CPU per request that httpx does.
    """

    def __init__(self, base_url: str, parallel: int) -> None:
        self.base_url = base_url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=parallel),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, *, timeout: float | None = None,
                      **kwargs: Any) -> Reply:
        limit = aiohttp.ClientTimeout(total=timeout) if timeout else None
        async with self._session.request(method, self.base_url + path, timeout=limit,
                                         **kwargs) as resp:
            return Reply(resp.status, await resp.text())


def parse_timestamp(value: object) -> float | None:
    """RFC 3339 (as the scheduler emits it) to epoch seconds; null stays None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp is not a string: {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:  # the API promises an offset; read a bare time as UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


async def check_reachable(client: Client, url: str) -> str | None:
    """One-line reason the scheduler cannot be used, or None when it answers /healthz."""
    try:
        resp = await client.request("GET", "/healthz", timeout=5.0)
    except REQUEST_ERRORS as exc:
        return f"cannot reach scheduler at {url} ({_describe(exc)})"
    if resp.status != 200:
        return f"scheduler at {url} is not healthy: GET /healthz returned {resp.status}"
    return None


async def submit_one(client: Client, clock: Clock, config: Config, task: Task) -> None:
    body = {"command": config.command, "delay_seconds": config.delay}
    task.submit_at = clock.wall()
    try:
        resp = await client.request("POST", "/schedule", json=body)
    except REQUEST_ERRORS as exc:
        task.error = f"submit: {_describe(exc)}"
        return
    if not resp.ok:
        task.error = f"submit: {resp.error()}"
        return
    try:
        task_id = resp.json()["task_id"]
    except (ValueError, KeyError, TypeError):
        task.error = f"submit: response without task_id: {resp.text[:200]}"
        return
    task.task_id = str(task_id)


async def submit_batch(client: Client, clock: Clock, config: Config, batch: list[Task]) -> None:
    """One POST /tasks/batch for these tasks; its ids come back in the order given."""
    body = {"tasks": [{"command": config.command, "delay_seconds": config.delay}] * len(batch)}
    submit_at = clock.wall()
    for task in batch:
        task.submit_at = submit_at
    try:
        resp = await client.request("POST", "/tasks/batch", json=body)
        ids = resp.json()["task_ids"] if resp.ok else None
    except REQUEST_ERRORS as exc:
        ids, problem = None, f"submit: {_describe(exc)}"
    except (ValueError, KeyError, TypeError):
        ids, problem = None, f"submit: batch answer without task_ids: {resp.text[:200]}"
    else:
        problem = f"submit: {resp.error()}"
    if ids is None or len(ids) != len(batch):
        for task in batch:
            task.error = problem
        return
    for task, task_id in zip(batch, ids, strict=True):
        task.task_id = str(task_id)


async def submit_closed_loop(client: Client, clock: Clock, config: Config,
                             tasks: list[Task]) -> None:
    """PARALLEL submitters, each sending its next request as soon as the previous returns."""
    pending = iter(tasks)
    batches = iter([tasks[i:i + config.batch] for i in range(0, len(tasks), config.batch)])

    async def submitter() -> None:
        if config.batch > 1:
            for batch in batches:  # shared iterator, as below
                await submit_batch(client, clock, config, batch)
            return
        for task in pending:  # shared iterator: each task is taken by exactly one submitter
            await submit_one(client, clock, config, task)

    await asyncio.gather(*(submitter() for _ in range(min(config.parallel, len(tasks)))))


async def submit_open_loop(client: Client, clock: Clock, config: Config,
                           tasks: list[Task]) -> OpenLoop:
    """Request i leaves at start + i/RATE whatever the responses, at most PARALLEL in flight."""
    slots = asyncio.Semaphore(config.parallel)
    in_flight: list[asyncio.Task[None]] = []
    max_lag = 0.0
    sent_at: list[float] = []

    async def send(task: Task) -> None:
        try:
            await submit_one(client, clock, config, task)
        finally:
            slots.release()

    start = clock.mono()
    for i, task in enumerate(tasks):
        target = start + i / config.rate
        wait = target - clock.mono()
        if wait > 0:
            await asyncio.sleep(wait)
        await slots.acquire()  # a full window delays this send: that is the lag we report
        now = clock.mono()
        max_lag = max(max_lag, now - target)
        sent_at.append(now)
        in_flight.append(asyncio.create_task(send(task)))
    await asyncio.gather(*in_flight)

    span = sent_at[-1] - sent_at[0]
    achieved = (len(sent_at) - 1) / span if span > 0 else config.rate
    return OpenLoop(target_rate=config.rate, achieved_rate=achieved, max_lag_ms=max_lag * 1e3)


def record_status(task: Task, body: dict[str, Any], observed_at: float) -> None:
    """Keep a terminal status and its server timestamps; other statuses change nothing."""
    try:
        status = body["status"]
        if status not in TERMINAL_STATUSES:
            return
        scheduled_at = parse_timestamp(body.get("scheduled_at"))
        started_at = parse_timestamp(body.get("started_at"))
        completed_at = parse_timestamp(body.get("completed_at"))
    except (ValueError, KeyError, TypeError) as exc:
        task.error = f"status: unreadable response ({_describe(exc)})"
        return
    task.observed_at = observed_at
    task.scheduled_at, task.started_at = scheduled_at, started_at
    task.completed_at = completed_at
    task.status = str(status)


async def poll_batch(client: Client, clock: Clock, batch: list[Task],
                     slots: asyncio.Semaphore) -> None:
    """One GET /tasks?id=... for up to POLL_BATCH outstanding tasks."""
    async with slots:
        params = [("id", t.task_id or "") for t in batch]
        try:
            resp = await client.request("GET", "/tasks", params=params)
        except REQUEST_ERRORS:
            return  # transient: the tasks stay outstanding and are polled again next sweep
        if not resp.ok:
            return
        try:
            found = {str(body["task_id"]): body for body in resp.json()["tasks"]}
        except (ValueError, KeyError, TypeError) as exc:
            for task in batch:
                task.error = f"status: unreadable response ({_describe(exc)})"
            return
        observed_at = clock.wall()
        for task in batch:
            body = found.get(task.task_id or "")
            if body is None:
                task.error = "status: scheduler does not know this task_id"
            else:
                record_status(task, body, observed_at)


async def poll_until_done(client: Client, clock: Clock, config: Config,
                          tasks: list[Task]) -> None:
    """Sweep the outstanding tasks, a batch per request, until all are terminal or TIMEOUT
    passes. Latencies come from server timestamps, so the sweep pace does not distort them."""
    deadline = clock.mono() + config.timeout
    slots = asyncio.Semaphore(config.parallel)
    while True:
        outstanding = [t for t in tasks if t.status is None and t.error is None]
        if not outstanding or clock.mono() >= deadline:
            return
        batches = [outstanding[i:i + POLL_BATCH] for i in range(0, len(outstanding), POLL_BATCH)]
        await asyncio.gather(*(poll_batch(client, clock, b, slots) for b in batches))
        if any(t.status is None and t.error is None for t in outstanding):
            await asyncio.sleep(min(POLL_PAUSE_S, max(0.0, deadline - clock.mono())))


async def run(config: Config) -> tuple[list[Task], float, OpenLoop | None] | str:
    """Submit and poll; returns the tasks, the submit end instant and open-loop figures,
    or a one-line error when the scheduler cannot be reached."""
    clock = Clock()
    tasks = [Task(index=i) for i in range(config.count)]
    client = Client(config.url, config.parallel)
    try:
        problem = await check_reachable(client, config.url)
        if problem is not None:
            return problem
        mode = f"at {config.rate:g}/s" if config.rate > 0 else "as fast as possible"
        print(f"submitting {config.count} tasks to {config.url} {mode}, "
              f"{config.parallel} in flight", file=sys.stderr)
        with terminal_progress() as bars:
            shown = asyncio.create_task(show_progress(bars, tasks))
            open_loop = None
            if config.rate > 0 and config.batch > 1:
                return "-b (batches) works only as fast as possible, without -r"
            if config.rate > 0:
                open_loop = await submit_open_loop(client, clock, config, tasks)
            else:
                await submit_closed_loop(client, clock, config, tasks)
            submit_end = clock.wall()
            await poll_until_done(client, clock, config, tasks)
            shown.cancel()
    finally:
        await client.close()
    return tasks, submit_end, open_loop


async def show_progress(bars: Progress, tasks: Sequence[Task]) -> None:
    """Tasks submitted and finished so far, on a terminal (see devtools/progress.py)."""
    if bars.disable:
        return
    submitted = bars.add_task("submitted", total=len(tasks))
    finished = bars.add_task("finished", total=len(tasks))
    while True:
        bars.update(submitted, completed=sum(1 for t in tasks if t.task_id or t.error))
        bars.update(finished, completed=sum(1 for t in tasks if t.status or t.error))
        await asyncio.sleep(0.25)


def _warn_problems(tasks: Sequence[Task], open_loop: OpenLoop | None) -> None:
    if open_loop and open_loop.achieved_rate < RATE_TOLERANCE * open_loop.target_rate:
        print(f"warning: target rate {open_loop.target_rate:g}/s not kept: achieved "
              f"{open_loop.achieved_rate:.1f}/s, max lag {open_loop.max_lag_ms:.1f} ms "
              "(raise -p or lower -r)", file=sys.stderr)
    errors = sorted({t.error for t in tasks if t.error is not None})
    for error in errors[:5]:
        print(f"error: {error}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    outcome = asyncio.run(run(config))
    if isinstance(outcome, str):
        print(f"benchmark: {outcome}", file=sys.stderr)
        return 2
    tasks, submit_end, open_loop = outcome
    report = build_report(tasks, submit_end, open_loop)
    _warn_problems(tasks, open_loop)
    print("\n".join(format_report(report)))
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(json.dumps(report_json(report, config), indent=2) + "\n")
    return 0 if report_ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
