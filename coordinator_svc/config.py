"""The coordinator's configuration, built once from flags and the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.config import (
    ConfigError,
    ListenAddress,
    add_ready_file_flag,
    add_tls_flags,
    cluster_token,
    database_url,
    parse_duration,
    parse_listen,
    secure_listen,
    tls_material,
)
from common.grpc_security import GrpcSecurity
from common.logs import DEFAULT_LOGS, LogSettings, add_log_flags, log_settings
from common.metrics import add_metrics_flag, metrics_port

LOST_AFTER_HEARTBEATS = 3


@dataclass(frozen=True)
class RetentionSettings:
    """What coordinators delete, and how (coordinator_svc/retention.py)."""

    # Seconds a finished task and a tick are kept; None keeps everything.
    age: float | None = 7 * 86400.0
    # The newest ticks of each schedule kept whatever their age.
    keep_ticks: int = 100
    # Rows one statement deletes at most.
    batch: int = 500
    # Seconds between passes once nothing more is old enough.
    interval: float = 60.0


DEFAULT_RETENTION = RetentionSettings()


@dataclass(frozen=True)
class CoordinatorConfig:
    listen: ListenAddress
    database_url: str
    security: GrpcSecurity
    # The one place the heartbeat interval is set: coordinators tell workers in every
    # heartbeat answer, and declare a worker lost after LOST_AFTER_HEARTBEATS of them.
    heartbeat_interval: float = 1.0
    # Safety-net wake-up when no NOTIFY and no due time woke the loops.
    poll_interval: float = 1.0
    # How long a hand-over may take before an attempt the worker does not hold is given up.
    handover_grace: float = 10.0
    submit_timeout: float = 5.0
    pool_max_size: int = 10
    ready_file: Path | None = None
    log: LogSettings = DEFAULT_LOGS
    # Prometheus metrics over HTTP on this port (0: any free one); None: off
    metrics_port: int | None = None
    retention: RetentionSettings = DEFAULT_RETENTION

    @property
    def lost_after(self) -> float:
        """Seconds without a heartbeat after which a worker is declared lost."""
        return LOST_AFTER_HEARTBEATS * self.heartbeat_interval


def add_retention_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retention",
        default="7d",
        help="delete finished tasks (their attempts and stored output) and cron ticks older "
        "than this: 90s, 15m, 12h, 7d, or off (default 7d)",
    )
    parser.add_argument(
        "--keep-ticks",
        type=int,
        default=DEFAULT_RETENTION.keep_ticks,
        help="newest ticks of each schedule kept whatever their age (default 100)",
    )
    parser.add_argument(
        "--prune-batch",
        type=int,
        default=DEFAULT_RETENTION.batch,
        help="rows one retention statement deletes at most (default 500)",
    )
    parser.add_argument(
        "--prune-interval",
        type=float,
        default=DEFAULT_RETENTION.interval,
        help="seconds between retention passes once nothing old is left (default 60)",
    )


def retention_settings(args: argparse.Namespace) -> RetentionSettings:
    text = str(args.retention).strip().lower()
    age = None if text == "off" else parse_duration(text, "--retention")
    if age is not None and age < 1:
        raise ConfigError("--retention must be at least 1s (or off)")
    if not 0 <= args.keep_ticks <= 1_000_000:
        raise ConfigError("--keep-ticks must be between 0 and 1000000")
    if not 1 <= args.prune_batch <= 10_000:
        raise ConfigError("--prune-batch must be between 1 and 10000")
    if not 0.05 <= args.prune_interval <= 86400:
        raise ConfigError("--prune-interval must be between 0.05 and 86400 seconds")
    return RetentionSettings(age, args.keep_ticks, args.prune_batch, args.prune_interval)


def load(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> CoordinatorConfig:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="skiplock-coordinator", description=__doc__)
    parser.add_argument(
        "--coordinator_port",
        "--coordinator-port",
        default=":8080",
        help="[host]:port to serve gRPC on (default :8080)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        help="seconds between safety-net scans (default 1)",
    )
    parser.add_argument("--pool-size", type=int, default=10, help="max database connections")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without SKIPLOCK_CLUSTER_TOKEN or mutual TLS",
    )
    add_retention_flags(parser)
    add_ready_file_flag(parser)
    add_log_flags(parser, env)
    add_metrics_flag(parser, env)
    add_tls_flags(parser, env, ca=True)
    args = parser.parse_args(argv)
    log = log_settings(args)
    if not 0.05 <= args.poll_interval <= 60:
        raise ConfigError("--poll-interval must be between 0.05 and 60 seconds")
    if not 4 <= args.pool_size <= 1000:
        raise ConfigError("--pool-size must be between 4 and 1000")
    security = GrpcSecurity(
        token=cluster_token(env), tls=tls_material(args.tls_cert, args.tls_key, args.tls_ca)
    )
    listen = secure_listen(
        parse_listen(args.coordinator_port, "--coordinator_port"),
        security.authenticates_callers,
        args.insecure,
        "--coordinator_port",
        "SKIPLOCK_CLUSTER_TOKEN or mutual TLS",
    )
    return CoordinatorConfig(
        listen=listen,
        database_url=database_url(env),
        security=security,
        poll_interval=args.poll_interval,
        pool_max_size=args.pool_size,
        ready_file=args.ready_file,
        log=log,
        metrics_port=metrics_port(args.metrics_port),
        retention=retention_settings(args),
    )
