"""Calls to the coordinators: any one of them answers for the cluster, so fail over in turn.
Reports travel on one long-lived ReportStream to the coordinator in use."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from common import grpc_security
from common.streams import STREAM_RETRY_AFTER, UnaryFallback
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
R = TypeVar("R")

# Redial a coordinator that went away at least every second (gRPC's default backoff grows to
# two minutes), so a restarted one hears heartbeats again well within the lost-worker bound.
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class NoCoordinatorReachable(Exception):
    pass


class NotWritten(Exception):
    """The report stream had ended before a batch was written to it."""

    def details(self) -> str:
        return str(self)


class StreamEnded(Exception):
    """The coordinator ended the report stream (it is stopping) without answering."""

    def details(self) -> str:
        return "the coordinator ended the stream"


# What a broken report stream raises: the batch then goes again, on a new stream.
STREAM_ERRORS = (
    grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError, StreamEnded, NotWritten
)


class CoordinatorClient:
    def __init__(
        self,
        targets: Sequence[str],
        security: grpc_security.GrpcSecurity,
        stream_retry_after: float = STREAM_RETRY_AFTER,
    ) -> None:
        self._targets = list(targets)
        self._metadata = grpc_security.call_metadata(security)
        self._channels = [
            grpc_security.channel(t, security, options=RECONNECT_OPTIONS) for t in self._targets
        ]
        self._stubs = [pb_grpc.CoordinatorStub(c) for c in self._channels]
        self._current = 0
        # The open report stream: (index of its coordinator, call). One batch at a time.
        self._stream: tuple[int, Any] | None = None
        self._report_lock = asyncio.Lock()
        # Coordinators without ReportStream (older versions): reports go by ReportStatus.
        self._unary_only: UnaryFallback[int] = UnaryFallback(stream_retry_after)

    async def close(self) -> None:
        self._drop_stream()
        for channel in self._channels:
            await channel.close()

    async def _call(
        self, pick: Callable[[pb_grpc.CoordinatorStub], Any], request: Any, timeout: float
    ) -> Any:
        """Try the coordinator that answered last, then each of the others once.

        `timeout` bounds the whole call: each try gets an equal share, so one frozen
        coordinator (which accepts connections but never answers) cannot use it all up. A
        heartbeat then still reaches a live coordinator within the lost-worker bound.
        """
        last_error: grpc.aio.AioRpcError | None = None
        share = timeout / len(self._stubs)
        for offset in range(len(self._stubs)):
            index = (self._current + offset) % len(self._stubs)
            try:
                response = await pick(self._stubs[index])(
                    request, timeout=share, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                last_error = exc
                continue
            self._current = index
            return response
        detail = last_error.details() if last_error else "no coordinators configured"
        raise NoCoordinatorReachable(f"{self._targets}: {detail}")

    async def heartbeat(self, request: pb.HeartbeatRequest, timeout: float) -> pb.HeartbeatResponse:
        response: pb.HeartbeatResponse = await self._call(lambda s: s.Heartbeat, request, timeout)
        return response

    async def report(
        self, request: pb.ReportStatusRequest, timeout: float
    ) -> pb.ReportStatusResponse:
        """Send a batch on the report stream and wait for its answer. On any failure drop the
        stream and try the next coordinator, as `_call` does; sending a batch again changes
        nothing twice, so one whose answer was lost is simply sent again."""
        async with self._report_lock:
            last_error: BaseException | None = None
            share = timeout / len(self._stubs)
            for offset in range(len(self._stubs)):
                index = (self._current + offset) % len(self._stubs)
                try:
                    async with asyncio.timeout(share):  # a timer, not a task per batch
                        response = await self._exchange(index, request)
                except STREAM_ERRORS as exc:
                    self._drop_stream()
                    last_error = exc
                    continue
                self._current = index
                return response
            detail = describe(last_error) if last_error else "no coordinators configured"
            raise NoCoordinatorReachable(f"{self._targets}: {detail}")

    async def _exchange(
        self, index: int, request: pb.ReportStatusRequest
    ) -> pb.ReportStatusResponse:
        if not self._unary_only.unary(index):
            try:
                return await self._on_fresh_stream(index, request)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self._drop_stream()
                self._unary_only.remember(index)
        response: pb.ReportStatusResponse = await self._stubs[index].ReportStatus(
            request, metadata=self._metadata
        )
        return response

    async def _on_fresh_stream(
        self, index: int, request: pb.ReportStatusRequest
    ) -> pb.ReportStatusResponse:
        """On the stream, or on a new one when it ended before the batch went out: a stream
        that ended while idle (its coordinator restarted), or one refused so fast that gRPC
        lost its status (INTERNAL instead of UNIMPLEMENTED) and the batch was never written."""
        try:
            return await self._on_stream(index, request)
        except NotWritten:
            self._drop_stream()
        return await self._on_stream(index, request)

    async def _on_stream(
        self, index: int, request: pb.ReportStatusRequest
    ) -> pb.ReportStatusResponse:
        if self._stream is not None and (self._stream[0] != index or self._stream[1].done()):
            self._drop_stream()  # another coordinator now, or it ended while idle
        if self._stream is None:
            self._stream = (index, self._stubs[index].ReportStream(metadata=self._metadata))
        call = self._stream[1]
        try:
            await call.write(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise
            raise NotWritten(describe(exc)) from exc
        except asyncio.InvalidStateError as exc:
            raise NotWritten(describe(exc)) from exc
        response = await call.read()
        if response is grpc.aio.EOF:
            raise StreamEnded()
        assert isinstance(response, pb.ReportStatusResponse)
        return response

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream[1].cancel()
            self._stream = None


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError | StreamEnded | NotWritten):
        return exc.details() or ""
    return str(exc) or type(exc).__name__
