"""gRPC stubs for calling workers: one channel per worker address, reused across calls."""

from __future__ import annotations

import grpc

from common import grpc_security
from proto import skiplock_pb2_grpc as pb_grpc


class WorkerStubs:
    def __init__(self, security: grpc_security.GrpcSecurity) -> None:
        self.security = security
        self.metadata = grpc_security.call_metadata(security)
        self._stubs: dict[str, tuple[grpc.aio.Channel, pb_grpc.WorkerStub]] = {}

    def get(self, address: str) -> pb_grpc.WorkerStub:
        if address not in self._stubs:
            channel = grpc_security.channel(address, self.security)
            self._stubs[address] = (channel, pb_grpc.WorkerStub(channel))
        return self._stubs[address][1]

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
