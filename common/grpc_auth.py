"""Shared-token authentication for the coordinator <-> worker gRPC calls."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

METADATA_KEY = "authorization"


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Metadata every outgoing call carries."""
    return ((METADATA_KEY, f"Bearer {token}"),) if token else ()


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


def server_interceptors(token: str | None) -> list[grpc.aio.ServerInterceptor]:
    return [TokenAuthInterceptor(token)] if token else []
