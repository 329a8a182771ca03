#!/usr/bin/env python3
"""CPU per message of a unary gRPC call against one message on a long-lived stream.

Two processes on uvloop, secured as skiplock's services are (common/grpc_security.py: the
cluster token and the call guard): a client sends COUNT requests of the size of a one-attempt
SubmitTasksRequest, each awaited before the next, first as unary calls, then as messages on one
bidirectional stream. Prints the CPU per message of each end (time.process_time) and the wall
time, for each of ROUNDS rounds. The server's handlers do nothing: what differs is the cost of
a call against a message, which is what SubmitStream and ReportStream save per hand-over and
per report batch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
import time
import uuid
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import uvloop
from google.protobuf.timestamp_pb2 import Timestamp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import grpc_security
from common.grpc_security import GrpcSecurity
from proto import skiplock_pb2 as pb

SECURITY = GrpcSecurity(token="t" * 32)
SERVICE = "bench.Bench"
REQUEST = pb.SubmitTasksRequest(
    attempts=[
        pb.SubmitTaskRequest(
            ref=pb.AttemptRef(task_id=str(uuid.uuid4()), attempt=1),
            command="echo hello",
            not_before=Timestamp(seconds=1),
        )
    ]
)
RESPONSE = pb.SubmitTasksResponse(results=[pb.SubmitTaskResponse(accepted=True)])


def serve(conn: Connection) -> None:
    """Runs in its own process: sends its port, then answers until `conn` is closed."""

    async def unary(request: pb.SubmitTasksRequest, context: Any) -> pb.SubmitTasksResponse:
        return RESPONSE

    async def stream(
        requests: AsyncIterator[pb.SubmitTasksRequest], context: Any
    ) -> AsyncIterator[pb.SubmitTasksResponse]:
        async for _ in requests:
            yield RESPONSE

    async def cpu(request: pb.SubmitTasksRequest, context: Any) -> pb.SubmitTasksResponse:
        reason = repr(time.process_time())
        return pb.SubmitTasksResponse(results=[pb.SubmitTaskResponse(reason=reason)])

    async def main() -> None:
        server = grpc_security.server(SECURITY, caller_role=grpc_security.COORDINATOR)
        codec: dict[str, Any] = {
            "request_deserializer": pb.SubmitTasksRequest.FromString,
            "response_serializer": pb.SubmitTasksResponse.SerializeToString,
        }
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, **codec),
            "Cpu": grpc.unary_unary_rpc_method_handler(cpu, **codec),
            "Stream": grpc.stream_stream_rpc_method_handler(stream, **codec),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = grpc_security.add_port(server, "127.0.0.1:0", SECURITY)
        await server.start()
        conn.send(port)
        with contextlib.suppress(EOFError):  # once the bench has finished
            await asyncio.to_thread(conn.recv_bytes)
        await server.stop(None)

    uvloop.run(main())


async def measure(port: int, count: int, rounds: int) -> None:
    metadata = grpc_security.call_metadata(SECURITY)
    codec: dict[str, Any] = {
        "request_serializer": pb.SubmitTasksRequest.SerializeToString,
        "response_deserializer": pb.SubmitTasksResponse.FromString,
    }
    async with grpc_security.channel(f"127.0.0.1:{port}", SECURITY) as channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary", **codec)
        cpu = channel.unary_unary(f"/{SERVICE}/Cpu", **codec)
        stream = channel.stream_stream(f"/{SERVICE}/Stream", **codec)

        async def server_cpu() -> float:
            answer = await cpu(REQUEST, metadata=metadata)
            return float(answer.results[0].reason)

        async def unary_calls() -> None:
            for _ in range(count):
                await unary(REQUEST, timeout=5, metadata=metadata)

        async def stream_messages() -> None:
            call = stream(metadata=metadata)
            for _ in range(count):
                await call.write(REQUEST)
                await call.read()
            await call.done_writing()

        await unary_calls()  # warm up
        for _ in range(rounds):
            for name, run in (("unary", unary_calls), ("stream", stream_messages)):
                server0 = await server_cpu()
                client0, wall0 = time.process_time(), time.perf_counter()
                await run()
                client1, wall1 = time.process_time(), time.perf_counter()
                server1 = await server_cpu()
                print(
                    f"{name:6s}  client {(client1 - client0) / count * 1e6:4.0f} µs"
                    f"  server {(server1 - server0) / count * 1e6:4.0f} µs"
                    f"  wall {(wall1 - wall0) / count * 1e6:4.0f} µs per message",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--count", type=int, default=5000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    args = parser.parse_args()
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(theirs,))
    server.start()
    port = ours.recv()
    try:
        uvloop.run(measure(port, args.count, args.rounds))
    finally:
        ours.close()
        server.join(10)


if __name__ == "__main__":
    main()
