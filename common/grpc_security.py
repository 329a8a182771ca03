"""How every gRPC server and channel of skiplock is secured, in one place.

Services build a `GrpcSecurity` from their config and create servers, listening ports and
channels only through `server`, `add_port` and `channel`, so whatever secures one connection
secures them all: the cluster token today, TLS and the caller's role tomorrow.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

METADATA_KEY = "authorization"

# The two kinds of callers: workers call coordinators, coordinators call workers.
COORDINATOR = "coordinator"
WORKER = "worker"


@dataclass(frozen=True)
class GrpcSecurity:
    """The credentials one service presents and demands."""

    token: str | None = None

    @property
    def authenticates_callers(self) -> bool:
        """Whether a caller must prove anything: without it only loopback may be bound."""
        return self.token is not None


def call_metadata(security: GrpcSecurity) -> tuple[tuple[str, str], ...]:
    """Metadata every outgoing call carries."""
    return ((METADATA_KEY, f"Bearer {security.token}"),) if security.token else ()


def _token_matches(metadata: Any, expected: str) -> bool:
    presented = ""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str):
            presented = value
    # Constant-time compare so the token cannot be guessed byte by byte from timings.
    return hmac.compare_digest(presented.encode(), f"Bearer {expected}".encode())


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Rejects every call that does not present the cluster token."""

    def __init__(self, token: str) -> None:
        self._token = token

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong cluster token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if _token_matches(handler_call_details.invocation_metadata, self._token):
            return await continuation(handler_call_details)
        return self._deny


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method: an exception a method did not expect is logged here, with its
    traceback, and the caller gets INTERNAL with no detail of the server's insides."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        for kind, make in _HANDLER_FACTORIES.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(
                    _guarded(behavior, method),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


_HANDLER_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


async def _internal_error(context: grpc.aio.ServicerContext, method: str) -> None:
    log.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server's log")


def _guarded(behavior: Behavior, method: str) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception:
                await _internal_error(context, method)

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception:
            await _internal_error(context, method)

    return unary


def server(
    security: GrpcSecurity,
    caller_role: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Server:
    """A gRPC server that admits only callers of `caller_role` holding the cluster's
    credentials and never answers with a traceback; `interceptors` run after those checks."""
    checks: list[grpc.aio.ServerInterceptor] = []
    if security.token:
        checks.append(TokenAuthInterceptor(security.token))
    return grpc.aio.server(
        interceptors=[*checks, CallGuard(), *interceptors], options=list(options)
    )


def add_port(server: grpc.aio.Server, target: str, security: GrpcSecurity) -> int:
    """Listen on `target` ('host:port'; port 0 lets the system choose); returns the port."""
    port: int = server.add_insecure_port(target)
    return port


def channel(
    target: str, security: GrpcSecurity, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A channel to another skiplock service at `target` ('host:port')."""
    return grpc.aio.insecure_channel(target, options=list(options))
