"""Prometheus metrics shared by the services: the `--metrics-port` flag and its HTTP server, and
the metrics every service counts alike. Each service defines its own metrics in its
`metrics.py`; all live in prometheus-client's default registry (one per process)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from prometheus_client import Counter, start_http_server

from common.config import ConfigError

DATABASE_ERRORS = Counter(
    "skiplock_database_errors",
    "Database operations that failed (connection lost, timeout, refused), by operation",
    ["operation"],
)


def add_metrics_flag(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=env.get("SKIPLOCK_METRICS_PORT", "").strip() or None,
        help="serve Prometheus metrics over HTTP on this port (0: any free port, announced in "
        "the log and the ready file); default $SKIPLOCK_METRICS_PORT, else off",
    )


def metrics_port(value: int | None) -> int | None:
    if value is not None and not 0 <= value < 65536:
        raise ConfigError(f"--metrics-port: port {value} out of range 0-65535")
    return value


def serve_metrics(host: str, port: int) -> int:
    """Serve /metrics from a background thread; returns the port bound."""
    server, _ = start_http_server(port, addr=host)
    return int(server.server_port)
