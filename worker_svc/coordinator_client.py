"""Calls to the coordinators: any one of them answers for the cluster, so fail over in turn."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc

from common import grpc_security
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


class CoordinatorClient:
    def __init__(self, targets: Sequence[str], security: grpc_security.GrpcSecurity) -> None:
        self._targets = list(targets)
        self._metadata = grpc_security.call_metadata(security)
        self._channels = [
            grpc_security.channel(t, security, options=RECONNECT_OPTIONS) for t in self._targets
        ]
        self._stubs = [pb_grpc.CoordinatorStub(c) for c in self._channels]
        self._current = 0

    async def close(self) -> None:
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
        response: pb.ReportStatusResponse = await self._call(
            lambda s: s.ReportStatus, request, timeout
        )
        return response
