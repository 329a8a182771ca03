"""The worker's configuration, built once from flags and the environment."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.config import ConfigError, ListenAddress, cluster_token, parse_listen, secure_listen
from common.limits import is_wildcard_host


@dataclass(frozen=True)
class WorkerConfig:
    listen: ListenAddress
    coordinators: tuple[str, ...]
    slots: int
    output_dir: Path
    drain_timeout: float
    worker_id: str
    # host:port coordinators dial to reach this worker
    advertise_address: str
    token: str | None
    # SIGTERM first; SIGKILL when the group outlives this grace
    kill_grace: float = 5.0
    submit_deadline: float = 5.0


def advertised_address(listen: ListenAddress, env: Mapping[str, str]) -> str:
    """WORKER_ADDRESS (+ port), else the bound host when specific, else this machine's hostname.

    Never a wildcard: coordinators dial this address.
    """
    explicit = env.get("WORKER_ADDRESS", "").strip()
    if explicit:
        host, port = split_address(explicit, listen.port)
    elif not is_wildcard_host(listen.host):
        host, port = listen.host, listen.port
    else:
        host, port = socket.gethostname(), listen.port
    if is_wildcard_host(host):
        raise ConfigError(
            f"WORKER_ADDRESS {explicit!r} is a wildcard that coordinators cannot dial; "
            "give this worker's hostname or IP address"
        )
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(text: str, default_port: int) -> tuple[str, int]:
    """'host', 'host:port', a bare IPv6 address, '[v6]' or '[v6]:port' -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a name, an IPv4 address or a bare IPv6 address
        host, port = text, ""
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise ConfigError(f"WORKER_ADDRESS: expected host or host:port, got {text!r}")
    return host, int(port) if port else default_port


def parse_coordinators(value: str) -> tuple[str, ...]:
    targets = tuple(part.strip() for part in value.split(",") if part.strip())
    if not targets:
        raise ConfigError("--coordinator: give at least one host:port")
    for target in targets:
        parse_listen(target, "--coordinator")
    return targets


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> WorkerConfig:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="skiplock-worker", description=__doc__)
    parser.add_argument(
        "--worker_port",
        "--worker-port",
        default=":8000",
        help="[host]:port to serve gRPC on (default :8000)",
    )
    parser.add_argument(
        "--coordinator",
        default="localhost:8080",
        help="coordinator host:port, or a comma-separated list",
    )
    parser.add_argument("--slots", type=int, default=4, help="attempts run at once (default 4)")
    parser.add_argument(
        "--output-dir",
        "--output_dir",
        default="worker_output",
        help="directory for command output files (default worker_output)",
    )
    parser.add_argument(
        "--drain-timeout",
        "--drain_timeout",
        type=float,
        default=30.0,
        help="seconds running commands may finish after SIGTERM (default 30)",
    )
    parser.add_argument(
        "--kill-grace",
        type=float,
        default=5.0,
        help="seconds between SIGTERM and SIGKILL when stopping a command",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without SKIPLOCK_CLUSTER_TOKEN",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.slots <= 1000:
        raise ConfigError("--slots must be between 1 and 1000")
    if args.drain_timeout < 0 or args.kill_grace < 0:
        raise ConfigError("--drain-timeout and --kill-grace must not be negative")
    token = cluster_token(env)
    listen = secure_listen(
        parse_listen(args.worker_port, "--worker_port"), token, args.insecure, "--worker_port"
    )
    advertise = advertised_address(listen, env)
    worker_id = env.get("WORKER_ID", "").strip() or f"{socket.gethostname()}-{listen.port}"
    return WorkerConfig(
        listen=listen,
        coordinators=parse_coordinators(args.coordinator),
        slots=args.slots,
        # Absolute, so the path reported for each output file means the same to every reader.
        output_dir=Path(args.output_dir).absolute(),
        drain_timeout=args.drain_timeout,
        worker_id=worker_id[:200],
        advertise_address=advertise,
        token=token,
        kill_grace=args.kill_grace,
    )
