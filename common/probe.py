"""`python -m common.probe HOST:PORT`: exit 0 when the skiplock gRPC server there answers the
standard health check (grpc.health.v1) with SERVING, 1 otherwise, with the reason on stderr.

For container health checks. It speaks to the server as the service itself would: TLS with the
same SKIPLOCK_TLS_CERT_FILE, SKIPLOCK_TLS_KEY_FILE and SKIPLOCK_TLS_CA_FILE when they are set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import grpc_security
from common.config import TLS_FLAGS, ConfigError, tls_material


def probe(target: str, env: Mapping[str, str], timeout: float = 3.0) -> str:
    """"" when the server serves, else why not."""
    cert, key, ca = (env.get(variable) or None for _, variable, _ in TLS_FLAGS)
    security = grpc_security.GrpcSecurity(tls=tls_material(cert, key, ca))
    credentials = grpc_security.channel_credentials(security)
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        status: str = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return status
    return ""


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m common.probe HOST:PORT", file=sys.stderr)
        return 2
    try:
        problem = probe(args[0], os.environ if env is None else env)
    except ConfigError as exc:
        problem = str(exc)
    if problem:
        print(f"{args[0]}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
