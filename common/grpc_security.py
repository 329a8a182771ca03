"""How every gRPC server and channel of skiplock is secured, in one place.

Services build a `GrpcSecurity` from their config and create servers, listening ports and
channels only through `server`, `add_port` and `channel`, so whatever secures one connection
secures them all:

- the cluster token, sent as `authorization: Bearer …` metadata and checked in constant time;
- TLS: with a certificate and key every port and channel is TLS; with a CA as well, mutual TLS:
  servers demand a client certificate signed by that CA, and the certificate names the caller.
  Its URI subject alternative name `skiplock://coordinator` or `skiplock://worker/<id>` (the id
  percent-encoded) is the caller's role and, for a worker, its identity. A server admits only
  the role that may call it (workers call coordinators, coordinators call workers) and a
  coordinator takes a worker's heartbeats and reports only for the id in its certificate;
- a guard on every method that answers an unexpected failure with INTERNAL, never a traceback.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common.config import TlsMaterial

log = logging.getLogger(__name__)

METADATA_KEY = "authorization"

# The two kinds of callers: workers call coordinators, coordinators call workers.
COORDINATOR = "coordinator"
WORKER = "worker"
URI_SCHEME = "skiplock://"
# Probes (grpc.health.v1) may ask any skiplock server whether it serves, without the cluster
# token or a role: the answer is all they learn. With mutual TLS they still need a certificate.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True)
class GrpcSecurity:
    """The credentials one service presents and demands."""

    token: str | None = None
    tls: TlsMaterial | None = None

    @property
    def mutual_tls(self) -> bool:
        return self.tls is not None and self.tls.ca is not None

    @property
    def authenticates_callers(self) -> bool:
        """Whether a caller must prove anything: without it only loopback may be bound."""
        return self.token is not None or self.mutual_tls


@dataclass(frozen=True)
class Caller:
    """Who is calling, as its certificate says."""

    role: str
    worker_id: str | None = None


def role_uri(role: str, worker_id: str | None = None) -> str:
    """The URI subject alternative name a certificate for this role (and worker) carries."""
    if role == WORKER:
        if not worker_id:
            raise ValueError("a worker certificate names its worker id")
        return f"{URI_SCHEME}{WORKER}/{quote(worker_id, safe='')}"
    return f"{URI_SCHEME}{role}"


def caller_from_uris(uris: Sequence[str]) -> Caller | None:
    """The first skiplock role among a certificate's URIs."""
    worker_prefix = f"{URI_SCHEME}{WORKER}/"
    for uri in uris:
        if uri == role_uri(COORDINATOR):
            return Caller(COORDINATOR)
        if uri.startswith(worker_prefix) and len(uri) > len(worker_prefix):
            return Caller(WORKER, unquote(uri.removeprefix(worker_prefix)))
    return None


def caller_of(context: grpc.aio.ServicerContext) -> Caller | None:
    """The caller named by its client certificate; None without mutual TLS or without a
    skiplock name in the certificate."""
    values = context.auth_context().get("peer_uri") or []
    return caller_from_uris([v.decode("utf-8", "replace") for v in values])


def impersonation(context: grpc.aio.ServicerContext, worker_ids: Iterable[str]) -> str:
    """Why a call may not speak for these workers ("" when it may): with mutual TLS a worker
    speaks only for the id in its certificate. Without it a worker id is a claim, not a
    credential (docs/SECURITY.md)."""
    caller = caller_of(context)
    if caller is None or caller.worker_id is None:
        return ""
    for worker_id in worker_ids:
        if worker_id != caller.worker_id:
            return (
                f"the certificate is worker {caller.worker_id[:200]!r}'s; "
                f"it cannot speak for {worker_id[:200]!r}"
            )
    return ""


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

        async def deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await deny(None, context)
            yield  # never reached: an async generator, as a streaming method's handler is

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        # A streaming method is denied as a stream: at once, not after a first request.
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny_stream)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        open_service = handler_call_details.method.startswith(OPEN_SERVICES)
        if open_service or _token_matches(handler_call_details.invocation_metadata, self._token):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return self._deny_stream if handler and handler.request_streaming else self._deny


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method: with mutual TLS, only callers whose certificate names `caller_role`
    get in; an exception a method did not expect is logged here, with its traceback, and the
    caller gets INTERNAL with no detail of the server's insides."""

    def __init__(self, caller_role: str | None) -> None:
        # None: callers present no certificate (no mutual TLS), so no role can be demanded.
        self.caller_role = caller_role

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
                    _guarded(behavior, method, self._role_for(method)),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


    def _role_for(self, method: str) -> str | None:
        return None if method.startswith(OPEN_SERVICES) else self.caller_role


_HANDLER_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


async def _internal_error(context: grpc.aio.ServicerContext, method: str) -> None:
    log.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server's log")


async def _check_role(context: grpc.aio.ServicerContext, role: str | None) -> None:
    """Abort unless the caller's certificate names `role` (None: nothing to demand)."""
    if role is None:
        return
    caller = caller_of(context)
    if caller is None or caller.role != role:
        named = f"a {caller.role}" if caller is not None else "no skiplock role"
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this service takes calls from {role}s; the certificate names {named}",
        )


def _guarded(behavior: Behavior, method: str, role: str | None) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _check_role(context, role)
            try:
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception:
                await _internal_error(context, method)

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _check_role(context, role)
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
    guard = CallGuard(caller_role if security.mutual_tls else None)
    return grpc.aio.server(interceptors=[*checks, guard, *interceptors], options=list(options))


def add_port(server: grpc.aio.Server, target: str, security: GrpcSecurity) -> int:
    """Listen on `target` ('host:port'; port 0 lets the system choose); returns the port."""
    tls = security.tls
    if tls is None:
        port: int = server.add_insecure_port(target)
        return port
    credentials = grpc.ssl_server_credentials(
        [(tls.key, tls.cert)], root_certificates=tls.ca, require_client_auth=tls.ca is not None
    )
    secure_port: int = server.add_secure_port(target, credentials)
    return secure_port


def channel_credentials(security: GrpcSecurity) -> grpc.ChannelCredentials | None:
    """What a client presents: with mutual TLS its own certificate too."""
    tls = security.tls
    if tls is None:
        return None
    if tls.ca is None:
        return grpc.ssl_channel_credentials()
    return grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)


def channel(
    target: str, security: GrpcSecurity, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """A channel to another skiplock service at `target` ('host:port'); with TLS the server's
    certificate must be valid for the host part of `target`."""
    credentials = channel_credentials(security)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, credentials, options=list(options))


class Health:
    """The standard gRPC health service on a skiplock server: NOT_SERVING until `serving()`,
    and again from `stopping()` on, so probes and load balancers see a drain coming."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    async def serving(self) -> None:
        await self._servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stopping(self) -> None:
        await self._servicer.enter_graceful_shutdown()
