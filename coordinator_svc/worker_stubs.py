"""gRPC stubs for calling workers: one channel per worker address, reused across calls, and one
SubmitStream per worker for hand-overs."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import grpc

from common import grpc_security
from common.streams import STREAM_RETRY_AFTER, UnaryFallback
from proto import skiplock_pb2 as pb
from proto import skiplock_pb2_grpc as pb_grpc


class NotSent(Exception):
    """The hand-over was never written to the worker: it cannot have started anything."""

    def __init__(self, detail: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(detail)
        self.code = code


class NoAnswer(Exception):
    """The hand-over was (or may have been) written, and no answer came: the worker may hold it."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def not_sent(exc: grpc.aio.AioRpcError) -> NotSent:
    return NotSent(describe(exc), exc.code())


class SubmitStream:
    """One long-lived SubmitStream call: hand-overs are written in order and answered in
    order, so each waits on a future in a queue that one reader resolves. Any failure closes
    the whole stream: the hand-overs still waiting get no answer, the next one opens another."""

    def __init__(self, call: Any, on_close: Any) -> None:
        self.call = call
        self.on_close = on_close
        self.waiting: deque[asyncio.Future[pb.SubmitTasksResponse]] = deque()
        self.write_lock = asyncio.Lock()
        self.closed = False
        # Up once the worker's headers arrived; until then nothing is written.
        self.opened = asyncio.ensure_future(self._open())
        self.opened.add_done_callback(lambda t: t.cancelled() or t.exception())
        self.reader: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        try:
            await self.call.initial_metadata()
            if self.call.done():  # refused: no such method, no token, a wrong certificate
                await self.call.read()  # raises the call's error
        except grpc.aio.AioRpcError as exc:
            self.close(describe(exc))
            raise not_sent(exc) from exc
        if self.call.done():
            self.close("the worker ended the stream at once")
            raise NotSent("UNAVAILABLE: the worker ended the stream at once")
        self.reader = asyncio.create_task(self._read())

    async def exchange(self, request: pb.SubmitTasksRequest, timeout: float) -> Any:
        """Write the hand-over and wait for its answer, `timeout` for both. One timer, and no
        task of its own: this runs for every hand-over."""
        written = False  # or maybe written: from the first byte on, the worker may have it
        try:
            async with asyncio.timeout(timeout):
                if not self.opened.done():
                    await asyncio.shield(self.opened)
                if self.opened.cancelled():
                    raise NotSent("CANCELLED: the coordinator is stopping")
                self.opened.result()  # raises NotSent when the stream did not open
                answer = asyncio.get_running_loop().create_future()
                async with self.write_lock:
                    if self.closed:
                        raise NotSent("UNAVAILABLE: the stream had ended")
                    self.waiting.append(answer)
                    written = True
                    try:
                        await self.call.write(request)
                    except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                        # The call had ended: the worker never saw this one.
                        self.waiting.remove(answer)
                        self.close(describe(exc))
                        raise NotSent(describe(exc)) from exc
                response: pb.SubmitTasksResponse = await answer
                return response
        except TimeoutError as exc:
            self.close("no answer in time")
            if not written:
                raise NotSent(f"DEADLINE_EXCEEDED: not written within {timeout:g}s") from exc
            raise NoAnswer(f"DEADLINE_EXCEEDED: no answer in {timeout:g}s") from exc

    async def _read(self) -> None:
        detail = "the worker ended the stream"
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    break
                if not self.waiting:
                    detail = "protocol error: an answer to no hand-over"
                    break
                answer = self.waiting.popleft()
                if not answer.done():
                    answer.set_result(response)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            detail = describe(exc)
        finally:
            self.close(detail)

    def close(self, detail: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_close(self)
        self.call.cancel()
        while self.waiting:
            answer = self.waiting.popleft()
            if not answer.done():
                answer.set_exception(NoAnswer(detail))

    async def wait_closed(self) -> None:
        for task in (self.opened, self.reader):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


class WorkerStubs:
    def __init__(
        self, security: grpc_security.GrpcSecurity, stream_retry_after: float = STREAM_RETRY_AFTER
    ) -> None:
        self.security = security
        self.metadata = grpc_security.call_metadata(security)
        self._stubs: dict[str, tuple[grpc.aio.Channel, pb_grpc.WorkerStub]] = {}
        self._streams: dict[str, SubmitStream] = {}
        # Workers that have no SubmitStream (older versions): hand-overs use SubmitTasks.
        self._unary_only: UnaryFallback[str] = UnaryFallback(stream_retry_after)

    def get(self, address: str) -> pb_grpc.WorkerStub:
        if address not in self._stubs:
            channel = grpc_security.channel(address, self.security)
            self._stubs[address] = (channel, pb_grpc.WorkerStub(channel))
        return self._stubs[address][1]

    async def submit(
        self, address: str, request: pb.SubmitTasksRequest, timeout: float
    ) -> pb.SubmitTasksResponse:
        """Hand over on the worker's stream (opened on first use); raises NotSent or NoAnswer."""
        if self._unary_only.unary(address):
            return await self._submit_unary(address, request, timeout)
        stream = self._streams.get(address)
        if stream is None:
            call = self.get(address).SubmitStream(metadata=self.metadata)
            stream = self._streams[address] = SubmitStream(call, self._forget)
        try:
            response: pb.SubmitTasksResponse = await stream.exchange(request, timeout)
        except NotSent as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            self._unary_only.remember(address)
            return await self._submit_unary(address, request, timeout)
        return response

    async def _submit_unary(
        self, address: str, request: pb.SubmitTasksRequest, timeout: float
    ) -> pb.SubmitTasksResponse:
        try:
            response: pb.SubmitTasksResponse = await self.get(address).SubmitTasks(
                request, timeout=timeout, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise NoAnswer(describe(exc)) from exc
            raise not_sent(exc) from exc
        return response

    def _forget(self, stream: SubmitStream) -> None:
        for address, known in list(self._streams.items()):
            if known is stream:
                del self._streams[address]

    async def close(self) -> None:
        streams = list(self._streams.values())
        for stream in streams:
            stream.close("the coordinator is stopping")
        for stream in streams:
            await stream.wait_closed()
        for channel, _ in self._stubs.values():
            await channel.close()
