#!/usr/bin/env python3
"""A worker's own CPU per command, from the hand-over to the delivered final report.

Runs COUNT `bash -c COMMAND` through the worker's own code in this process, on uvloop as the
worker does, made a child subreaper as the worker is: each attempt is handed to the worker's
gRPC servicer as a SubmitTaskRequest (WorkerServicer.submit, without the network), run by the
worker (output file, pipe and pump, spawn, pidfd, the reaper's check, metrics), and its reports
are delivered by the worker's Reporter over real gRPC to a coordinator stand-in in another
process that accepts every report, as many commands at once as the worker has slots. Prints
this process's own CPU per command (its children's not counted: that is the commands') for
each round, and the median. What a real coordinator and PostgreSQL cost is `make bench`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc
from worker_svc.config import load
from worker_svc.coordinator_client import CoordinatorClient
from worker_svc.reaper import become_subreaper
from worker_svc.service import Worker
from worker_svc.servicer import WorkerServicer


class AcceptingCoordinator(pb_grpc.CoordinatorServicer):
    """Takes every report and heartbeat, and says nothing is stale."""

    async def ReportStatus(
        self, request: pb.ReportStatusRequest, context: Any
    ) -> pb.ReportStatusResponse:
        return pb.ReportStatusResponse()

    async def ReportStream(
        self, requests: AsyncIterator[pb.ReportStatusRequest], context: Any
    ) -> AsyncIterator[pb.ReportStatusResponse]:
        async for _ in requests:
            yield pb.ReportStatusResponse()

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse()


def serve_coordinator(conn: Connection) -> None:
    """Runs in its own process: serves until `conn` is closed, after sending its port."""

    async def serve() -> None:
        server = grpc.aio.server()
        pb_grpc.add_CoordinatorServicer_to_server(AcceptingCoordinator(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        conn.send(port)
        with contextlib.suppress(EOFError):  # once the bench has finished
            await asyncio.to_thread(conn.recv_bytes)
        await server.stop(None)

    uvloop.run(serve())


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_round(
    count: int, slots: int, command: str, output_dir: Path, coordinator: str, stand_in: int
) -> float:
    """CPU seconds of this process per command for one round."""
    config = load(
        [f"--coordinator={coordinator}", f"--slots={slots}", f"--output-dir={output_dir}"],
        env={"WORKER_ID": "bench", "PATH": os.environ.get("PATH", "")},
    )
    client = CoordinatorClient(config.coordinators, config.security)
    worker = Worker(config, client)
    # The stand-in is this process's child: the reaper would take it for an attempt's leftover.
    worker.runner.reaper.leaders.add(stand_in)
    servicer = WorkerServicer(worker)
    requests = [
        pb.SubmitTaskRequest(
            ref=pb.AttemptRef(task_id=str(uuid.uuid4()), attempt=1), command=command
        )
        for _ in range(count)
    ]
    stop = asyncio.Event()
    await client.heartbeat(pb.HeartbeatRequest(worker_id="bench"), 10.0)  # connected
    delivering = asyncio.create_task(worker.reporter.run(stop))
    before = own_cpu()
    pending = list(reversed(requests))
    while pending or worker.executions:
        while pending and worker.free_slots() > 0:
            answer = servicer.submit(pending.pop())
            assert answer.accepted, answer.reason
        await asyncio.wait(
            [asyncio.ensure_future(e.finished.wait()) for e in worker.executions.values()],
            return_when=asyncio.FIRST_COMPLETED,
        )
    worker.runner.reaper.flush()
    while worker.reporter.has_pending():
        await asyncio.sleep(0.001)
    cost = (own_cpu() - before) / count
    stop.set()
    await delivering
    await client.close()
    return cost


async def rounds(args: argparse.Namespace, coordinator: str, stand_in: int) -> list[float]:
    """All rounds on one event loop (gRPC's asyncio layer keeps to the first it ran on)."""
    figures = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="path-", dir=args.output_root) as directory:
            cost = await one_round(
                args.count, args.slots, args.command, Path(directory), coordinator, stand_in
            )
        figures.append(cost)
        print(f"round: {cost * 1000:.3f} ms CPU per command", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=1000)
    parser.add_argument("-s", "--slots", type=int, default=4)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--command", default="echo hello")
    parser.add_argument(
        "--output-root",
        type=Path,
        default=None,
        help="where each round's output directory goes (default: the system's temporary one)",
    )
    args = parser.parse_args()
    if not become_subreaper():
        sys.exit("not a child subreaper, as a worker is")
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    stand_in = multiprocessing.get_context("spawn").Process(
        target=serve_coordinator, args=(theirs,), daemon=True
    )
    stand_in.start()
    coordinator = f"127.0.0.1:{ours.recv()}"
    try:
        figures = uvloop.run(rounds(args, coordinator, stand_in.pid or 0))
    finally:
        ours.close()
        stand_in.join(10)
    print(f"median {statistics.median(figures) * 1000:.3f} ms CPU per command")


if __name__ == "__main__":
    main()
