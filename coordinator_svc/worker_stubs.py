"""gRPC stubs for calling workers: one channel per worker address, reused across calls."""

from __future__ import annotations

import grpc

from common.grpc_auth import call_metadata
from proto import skiplock_pb2_grpc as pb_grpc


class WorkerStubs:
    def __init__(self, token: str | None) -> None:
        self.metadata = call_metadata(token)
        self._stubs: dict[str, tuple[grpc.aio.Channel, pb_grpc.WorkerStub]] = {}

    def get(self, address: str) -> pb_grpc.WorkerStub:
        if address not in self._stubs:
            channel = grpc.aio.insecure_channel(address)
            self._stubs[address] = (channel, pb_grpc.WorkerStub(channel))
        return self._stubs[address][1]

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
