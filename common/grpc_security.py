"""How every gRPC server and channel of skiplock is secured, in one place.

Services build a `GrpcSecurity` from their config and create servers, listening ports and
channels only through `server`, `add_port` and `channel`, so whatever secures one connection
secures them all: the cluster token today, TLS and the caller's role tomorrow.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

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


def server(
    security: GrpcSecurity,
    caller_role: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Server:
    """A gRPC server that admits only callers of `caller_role` holding the cluster's
    credentials; `interceptors` run after those checks."""
    checks: list[grpc.aio.ServerInterceptor] = []
    if security.token:
        checks.append(TokenAuthInterceptor(security.token))
    return grpc.aio.server(interceptors=[*checks, *interceptors], options=list(options))


def add_port(server: grpc.aio.Server, target: str, security: GrpcSecurity) -> int:
    """Listen on `target` ('host:port'; port 0 lets the system choose); returns the port."""
    port: int = server.add_insecure_port(target)
    return port


def channel(
    target: str, security: GrpcSecurity, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A channel to another skiplock service at `target` ('host:port')."""
    return grpc.aio.insecure_channel(target, options=list(options))
