"""For the fast in-process tests: real gRPC servers on port 0 inside the test's event loop, an
address that refuses connections and one that never answers, and waiting without sleeping a
fixed time."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc

from common import grpc_security
from common.config import ListenAddress
from common.grpc_security import GrpcSecurity
from proto import skiplock_pb2_grpc as pb_grpc
from worker_svc.config import WorkerConfig
from worker_svc.coordinator_client import CoordinatorClient
from worker_svc.service import Worker
from worker_svc.servicer import WorkerServicer

T = TypeVar("T")
NO_SECURITY = GrpcSecurity()
LOOPBACK = "127.0.0.1"


@asynccontextmanager
async def grpc_server(
    add: Callable[[grpc.aio.Server], None],
    address: str = f"{LOOPBACK}:0",
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    security: GrpcSecurity = NO_SECURITY,
    caller_role: str = grpc_security.COORDINATOR,
) -> AsyncIterator[str]:
    """Serve what `add` registers on `address` (port 0: one the server picks), secured as the
    services secure theirs, `interceptors` after those checks; yields host:port."""
    server = grpc_security.server(security, caller_role, interceptors)
    add(server)
    port = grpc_security.add_port(server, address, security)
    await server.start()
    try:
        yield f"{LOOPBACK}:{port}"
    finally:
        await server.stop(None)


@contextmanager
def refusing_address() -> Iterator[str]:
    """host:port held by a socket that is bound but does not listen: connections are refused
    until a server is started on the same address (gRPC servers set SO_REUSEPORT too), and no
    other process can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((LOOPBACK, 0))
        yield f"{LOOPBACK}:{sock.getsockname()[1]}"


@contextmanager
def silent_address() -> Iterator[str]:
    """host:port that accepts connections and never says a word: calls run into their deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield f"{LOOPBACK}:{sock.getsockname()[1]}"


async def eventually(
    predicate: Callable[[], T], timeout: float = 10.0, message: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy (and return it), up to `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        await asyncio.sleep(0.02)
    return value


class Recorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Notes every request a server receives (method, message) before handling it, those on
    streams too."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def requests(self, method: str) -> list[Any]:
        return [request for name, request in self.calls if name.endswith(f"/{method}")]

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is not None and handler.stream_stream is not None:
            return self._recording_stream(handler, details.method)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def record(request: Any, context: Any) -> Any:
            self.calls.append((details.method, request))
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            record,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _recording_stream(self, handler: Any, method: str) -> Any:
        inner = handler.stream_stream

        async def record(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async def noted() -> AsyncIterator[Any]:
                async for request in requests:
                    self.calls.append((method, request))
                    yield request

            async for response in inner(noted(), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            record,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def worker_config(tmp_path: Path, coordinator: str, slots: int = 2) -> WorkerConfig:
    return WorkerConfig(
        listen=ListenAddress(LOOPBACK, 0),
        coordinators=(coordinator,),
        slots=slots,
        output_dir=tmp_path / "output",
        drain_timeout=0,
        given_id="worker-under-test",
        hostname=LOOPBACK,
        advertise_host=LOOPBACK,
        advertise_port=1,
        security=GrpcSecurity(),
        kill_grace=0.5,
    )


@asynccontextmanager
async def serving_worker(config: WorkerConfig) -> AsyncIterator[tuple[Worker, str]]:
    """A Worker and its gRPC service on a port of its own (its loops do not run); yields the
    worker and its host:port. Whatever still runs is stopped on the way out."""
    client = CoordinatorClient(config.coordinators, config.security)
    worker = Worker(config, client)

    def add(server: grpc.aio.Server) -> None:
        pb_grpc.add_WorkerServicer_to_server(WorkerServicer(worker), server)

    try:
        async with grpc_server(add, security=config.security) as address:
            yield worker, address
    finally:
        await worker.stop_all()
        await client.close()
