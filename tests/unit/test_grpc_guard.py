"""The guard every skiplock gRPC server has: a method that fails unexpectedly answers INTERNAL
with no trace of the server's insides (the traceback goes to the server's log), while a method's
own refusals keep their status and message. A real server in the test's event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from common import grpc_security
from common.grpc_security import GrpcSecurity

SECRET = "password=hunter2 in /srv/skiplock/worker.py line 12"


async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ValueError(SECRET)


async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "worker_id must be 1-200 characters")
    raise AssertionError("abort returns never")


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def fail_midstream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    raise KeyError(SECRET)


def identity(value: bytes) -> bytes:
    return value


HANDLERS = {
    "Fail": grpc.unary_unary_rpc_method_handler(fail, identity, identity),
    "Refuse": grpc.unary_unary_rpc_method_handler(refuse, identity, identity),
    "Echo": grpc.unary_unary_rpc_method_handler(echo, identity, identity),
    "Stream": grpc.unary_stream_rpc_method_handler(fail_midstream, identity, identity),
}


async def call(method: str) -> tuple[grpc.StatusCode, str, list[bytes]]:
    server = grpc_security.server(GrpcSecurity(), grpc_security.WORKER)
    handlers = grpc.method_handlers_generic_handler("test.Guarded", HANDLERS)
    server.add_generic_rpc_handlers([handlers])
    port = grpc_security.add_port(server, "127.0.0.1:0", GrpcSecurity())
    await server.start()
    received: list[bytes] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            path = f"/test.Guarded/{method}"
            try:
                if method == "Stream":
                    stream: Any = channel.unary_stream(path)(b"x", timeout=5)
                    async for item in stream:
                        received.append(item)
                else:
                    received.append(await channel.unary_unary(path)(b"ping", timeout=5))
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details() or "", received
            return grpc.StatusCode.OK, "", received
    finally:
        await server.stop(None)


@pytest.mark.parametrize("method", ["Fail", "Stream"])
def test_an_unexpected_failure_is_internal_without_details(method, caplog):
    with caplog.at_level(logging.ERROR, logger="common.grpc_security"):
        code, details, _ = asyncio.run(call(method))
    assert code == grpc.StatusCode.INTERNAL
    assert details == "internal error; see the server's log"
    assert SECRET in caplog.text and "Traceback" in caplog.text


def test_a_refusal_keeps_its_status_and_message():
    code, details, _ = asyncio.run(call("Refuse"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "worker_id must be 1-200 characters"


def test_answers_pass_through_untouched():
    assert asyncio.run(call("Echo")) == (grpc.StatusCode.OK, "", [b"ping"])
