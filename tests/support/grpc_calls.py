"""Blocking gRPC calls for tests that only care how a call ends."""

from __future__ import annotations

import grpc

Metadata = tuple[tuple[str, str], ...]


def call_code(call: object, request: object, metadata: Metadata) -> grpc.StatusCode:
    """The status a call ends with (OK when it answers)."""
    try:
        call(request, timeout=10, metadata=metadata)  # type: ignore[operator]
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def stream_code(call: object, request: object, metadata: Metadata) -> grpc.StatusCode:
    """The status a stream that sends `request` alone ends with (OK when it answers)."""
    try:
        list(call(iter([request]), timeout=10, metadata=metadata))  # type: ignore[operator]
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)
