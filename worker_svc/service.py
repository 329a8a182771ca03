"""The worker: accepts attempts up to its slots, runs them, heartbeats, drains on shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from pathlib import Path

from common import grpc_security
from common.loops import supervise, wait_any
from common.metrics import serve_metrics
from common.ready import write_ready_file
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from proto.timestamps import to_timestamp
from worker_svc import metrics
from worker_svc.config import WorkerConfig
from worker_svc.coordinator_client import CoordinatorClient, NoCoordinatorReachable
from worker_svc.environment import command_environment
from worker_svc.output import prune_output_files
from worker_svc.process import Execution, Outcome, ProcessRunner
from worker_svc.reporter import Key, Reporter
from worker_svc.servicer import WorkerServicer

log = logging.getLogger(__name__)

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
# Coordinators own the heartbeat interval (their lost-worker bound is three of them) and say
# it in every answer; this one holds until the first answer, and answers are kept in bounds.
FIRST_HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_INTERVAL_BOUNDS = (0.05, 60.0)
# Output files are looked at every tenth of their retention, at least this often.
OUTPUT_PRUNE_INTERVAL_CAP = 600.0


class Worker:
    """What this worker holds and runs; the gRPC servicer and the loops act through it."""

    def __init__(self, config: WorkerConfig, client: CoordinatorClient) -> None:
        self.config = config
        self.client = client
        self.runner = ProcessRunner(
            config.kill_grace,
            output_group=config.output_group,
            output_file_limit=config.output_file_max_bytes,
            run_as=config.run_as,
        )
        self.reporter = Reporter(client, config.worker_id, self.on_stale)
        self.executions: dict[Key, Execution] = {}
        self.draining = False
        self.heartbeat_interval = FIRST_HEARTBEAT_INTERVAL
        self._runs: set[asyncio.Task[None]] = set()
        self._file_prefix = _UNSAFE_FILENAME.sub("_", config.worker_id)
        config.output_dir.mkdir(parents=True, exist_ok=True)

    # --- attempts -----------------------------------------------------------------------------

    def holds(self, key: Key) -> bool:
        """Running, or finished with a report not yet delivered."""
        return key in self.executions or self.reporter.holds(key)

    def free_slots(self) -> int:
        running = sum(1 for e in self.executions.values() if not e.finished.is_set())
        return max(self.config.slots - running, 0)

    def output_path(self, task_id: str, attempt: int) -> Path:
        return self.config.output_dir / f"{self._file_prefix}-{task_id}-{attempt}.log"

    def start(self, execution: Execution) -> None:
        """Run the execution in the background; it is held until its final report is delivered."""
        self.executions[execution.key] = execution
        task = asyncio.create_task(self._run(execution))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run(self, execution: Execution) -> None:
        try:
            outcome = await self.runner.run(execution, lambda: self.started(execution))
            metrics.finished(outcome.state)
            self.report(execution, outcome.state, outcome)
        finally:
            execution.finished.set()
            self.executions.pop(execution.key, None)

    def started(self, execution: Execution) -> None:
        if execution.output is not None:
            self.reporter.follow(execution.key, execution.output)
        self.report(execution, pb.ATTEMPT_STATE_RUNNING)

    def output_cap(self, task_cap: int | None) -> int:
        """Bytes of an attempt's output to keep at each end: the task may ask for fewer."""
        cap = self.config.output_cap_bytes
        return cap if task_cap is None else min(cap, task_cap)

    def command_env(
        self, task_id: str, attempt: int, task_env: Mapping[str, str]
    ) -> dict[str, str]:
        return command_environment(
            self.config.command_env, task_env, task_id, attempt, self.config.worker_id
        )

    def report(
        self,
        execution: Execution,
        state: pb.AttemptState.ValueType,
        outcome: Outcome | None = None,
    ) -> None:
        self.reporter.add(
            pb.StatusReport(
                ref=pb.AttemptRef(task_id=execution.task_id, attempt=execution.attempt),
                worker_id=self.config.worker_id,
                state=state,
                started_at=to_timestamp(execution.started_at),
                finished_at=to_timestamp(outcome.finished_at if outcome else None),
                exit_code=outcome.exit_code if outcome else None,
                output_path=str(execution.output_path),
                detail=outcome.detail if outcome else "",
            )
        )

    def stop_attempt(self, key: Key, state: pb.AttemptState.ValueType) -> None:
        execution = self.executions.get(key)
        if execution is not None:
            execution.stop(state)

    def on_stale(self, key: Key) -> None:
        """A coordinator says the attempt is no longer ours: stop it if it still runs."""
        self.stop_attempt(key, pb.ATTEMPT_STATE_CANCELLED)

    def held(self) -> list[pb.AttemptRef]:
        keys = set(self.executions) | self.reporter.held()
        return [pb.AttemptRef(task_id=t, attempt=a) for t, a in sorted(keys)]

    # --- loops --------------------------------------------------------------------------------

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        """Heartbeat every interval; keep trying while coordinators are down."""
        while not stop.is_set():
            await self.heartbeat_once()
            # Also collects what a sweep killed a moment after its end (reaper.py).
            self.runner.reaper.reap()
            await wait_any([stop], self.heartbeat_interval)

    async def heartbeat_once(self) -> None:
        request = pb.HeartbeatRequest(
            worker_id=self.config.worker_id,
            address=self.config.advertise_address,
            slots=self.config.slots,
            free_slots=self.free_slots(),
            draining=self.draining,
            held=self.held(),
            queues=self.config.queues,
            labels=dict(self.config.labels),
        )
        try:
            # Twice the interval in all: with the lost bound at three intervals, a heartbeat
            # that fails over past a frozen coordinator still lands in time.
            response = await self.client.heartbeat(request, timeout=2 * self.heartbeat_interval)
        except NoCoordinatorReachable as exc:
            metrics.HEARTBEAT_FAILURES.inc()
            log.warning("heartbeat not delivered: %s", exc)
            return
        if response.heartbeat_interval_ms > 0:
            low, high = HEARTBEAT_INTERVAL_BOUNDS
            self.heartbeat_interval = min(max(response.heartbeat_interval_ms / 1000, low), high)
        for ref in response.revoked:
            self.stop_attempt((ref.task_id, ref.attempt), pb.ATTEMPT_STATE_CANCELLED)

    async def prune_loop(self, stop: asyncio.Event) -> None:
        """Delete old output files now and then (their copy in the database stays while its
        task does); files of attempts this worker still holds are kept."""
        max_age = self.config.output_retention
        if max_age is None:
            return
        interval = min(max(max_age / 10, 1.0), OUTPUT_PRUNE_INTERVAL_CAP)
        while not stop.is_set():
            keep = {e.output_path for e in self.executions.values()}
            try:
                removed = await asyncio.to_thread(
                    prune_output_files, self.config.output_dir, max_age, keep
                )
            except OSError as exc:
                log.warning("could not prune output files in %s: %s", self.config.output_dir, exc)
            else:
                if removed:
                    log.info("deleted %d output file(s) older than %.0fs", removed, max_age)
            await wait_any([stop], interval)

    async def drain(self) -> None:
        """Stop taking work, let running commands finish up to the drain timeout, then stop them."""
        self.draining = True
        await self.heartbeat_once()
        if self.executions:
            log.info(
                "draining %d running attempt(s), up to %.0fs",
                len(self.executions),
                self.config.drain_timeout,
            )
            await self.wait_for_executions(self.config.drain_timeout)
        await self.stop_all()
        if not await self.reporter.flush(10.0):
            log.error(
                "shutting down with undelivered reports; coordinators will declare "
                "this worker lost and recover its attempts"
            )
        await self.heartbeat_once()

    async def stop_all(self) -> None:
        """Stop whatever still runs (SIGTERM, SIGKILL after the grace) and wait for it to end."""
        for key in list(self.executions):
            self.stop_attempt(key, pb.ATTEMPT_STATE_SHUTDOWN)
        await self.wait_for_executions(self.config.kill_grace + 2)

    async def wait_for_executions(self, seconds: float) -> None:
        waiters = [asyncio.ensure_future(e.finished.wait()) for e in self.executions.values()]
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=seconds)
            for waiter in pending:
                waiter.cancel()


async def serve(config: WorkerConfig, stop: asyncio.Event) -> None:
    """Serve until stop is set, then drain and shut down. A background loop that dies stops
    the worker (its commands are killed) and the error is raised."""
    server = grpc_security.server(config.security, caller_role=grpc_security.COORDINATOR)
    # Bound first: with port 0 the worker's default id and advertised address use the port
    # the system chose.
    config = config.bound_to(
        grpc_security.add_port(server, config.listen.grpc_target(), config.security)
    )
    client = CoordinatorClient(config.coordinators, config.security)
    worker = Worker(config, client)
    servicer = WorkerServicer(worker)
    pb_grpc.add_WorkerServicer_to_server(servicer, server)
    health = grpc_security.Health(server)
    await server.start()
    await health.serving()
    metrics_port = None
    if config.metrics_port is not None:
        metrics.watch_slots(config.slots, worker.free_slots)
        metrics_port = serve_metrics(config.listen.bind_host, config.metrics_port)
        log.info("metrics on http://%s:%d/metrics", config.listen.bind_host, metrics_port)
    write_ready_file(config.ready_file, config.listen.bind_host, config.listen.port, metrics_port)
    log.info(
        "worker %s serving on %s, advertising %s, %d slots",
        config.worker_id,
        config.listen.grpc_target(),
        config.advertise_address,
        config.slots,
    )
    # The loops outlive `stop`: the drain still heartbeats and delivers reports.
    loops_stop = asyncio.Event()
    supervisor = asyncio.create_task(
        supervise(
            loops_stop,
            {
                "heartbeat": lambda: worker.heartbeat_loop(loops_stop),
                "reporter": lambda: worker.reporter.run(loops_stop),
                "output-retention": lambda: worker.prune_loop(loops_stop),
            },
        )
    )
    try:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, supervisor], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        await health.stopping()  # draining: probes see it at once
        if not supervisor.done():
            await worker.drain()
            loops_stop.set()
        await supervisor
    finally:
        loops_stop.set()
        await worker.stop_all()
        # What the last attempts left behind dies with the worker, not after it.
        worker.runner.reaper.flush()
        servicer.streams.stop()
        await server.stop(grace=1.0)
        await client.close()
