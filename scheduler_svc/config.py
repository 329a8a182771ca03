"""The scheduler's configuration, built once from flags and the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.config import ListenAddress, add_ready_file_flag, database_url, parse_listen


@dataclass(frozen=True)
class SchedulerConfig:
    listen: ListenAddress
    database_url: str
    pool_max_size: int = 10
    ready_file: Path | None = None


def load(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> SchedulerConfig:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="skiplock-scheduler", description=__doc__)
    parser.add_argument(
        "--scheduler_port",
        "--scheduler-port",
        default=":8081",
        help="[host]:port to serve HTTP on (default :8081)",
    )
    parser.add_argument("--host", default=None, help="interface to bind; overrides the host part")
    parser.add_argument("--pool-size", type=int, default=10, help="max database connections")
    add_ready_file_flag(parser)
    args = parser.parse_args(argv)
    listen = parse_listen(args.scheduler_port, "--scheduler_port")
    if args.host is not None:
        listen = ListenAddress(args.host, listen.port)
    return SchedulerConfig(
        listen=listen,
        database_url=database_url(env),
        pool_max_size=args.pool_size,
        ready_file=args.ready_file,
    )
