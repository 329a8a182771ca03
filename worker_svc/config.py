"""The worker's configuration, built once from flags and the environment."""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common.config import (
    ConfigError,
    ListenAddress,
    add_ready_file_flag,
    add_tls_flags,
    cluster_token,
    parse_duration,
    parse_listen,
    secure_listen,
    tls_material,
)
from common.grpc_security import GrpcSecurity
from common.limits import is_wildcard_host
from common.logs import DEFAULT_LOGS, LogSettings, add_log_flags, log_settings
from common.metrics import add_metrics_flag, metrics_port
from common.output import DEFAULT_OUTPUT_CAP_BYTES, MAX_OUTPUT_CAP_BYTES
from common.routing import DEFAULT_QUEUE, parse_labels, parse_queues
from worker_svc.environment import base_environment, parse_pass_env
from worker_svc.process import RunAs

DEFAULT_OUTPUT_FILE_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class WorkerConfig:
    listen: ListenAddress
    coordinators: tuple[str, ...]
    slots: int
    output_dir: Path
    drain_timeout: float
    # WORKER_ID; None names the worker "<hostname>-<listen port>"
    given_id: str | None
    hostname: str
    # the host coordinators dial, and the port when WORKER_ADDRESS names one (else the listen port)
    advertise_host: str
    advertise_port: int | None
    security: GrpcSecurity
    ready_file: Path | None = None
    log: LogSettings = DEFAULT_LOGS
    # Prometheus metrics over HTTP on this port (0: any free one); None: off
    metrics_port: int | None = None
    # SIGTERM first; SIGKILL when the group outlives this grace
    kill_grace: float = 5.0
    # bytes of each attempt's output kept in the database at each end; 0 keeps none
    output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES
    submit_deadline: float = 5.0
    # Seconds output files are kept after their last write; None keeps them
    output_retention: float | None = 7 * 86400.0
    # What every command's environment starts from (worker_svc/environment.py), as
    # (name, value) pairs: the minimal base plus the --pass-env variables.
    command_env: tuple[tuple[str, str], ...] = ()
    # Queues this worker takes tasks from, and the labels tasks may ask of it (heartbeats
    # carry both)
    queues: tuple[str, ...] = (DEFAULT_QUEUE,)
    labels: tuple[tuple[str, str], ...] = ()
    # group id owning the output files (mode 0640); None keeps them 0600, the worker's alone
    output_group: int | None = None
    # the user commands run as (the worker runs as root); None: the worker's own user
    run_as: RunAs | None = None
    # bytes of a command's output written to its output file at most; 0: no limit
    output_file_max_bytes: int = DEFAULT_OUTPUT_FILE_MAX_BYTES

    @property
    def worker_id(self) -> str:
        return (self.given_id or f"{self.hostname}-{self.listen.port}")[:200]

    @property
    def advertise_address(self) -> str:
        """host:port coordinators dial to reach this worker."""
        host, port = self.advertise_host, self.advertise_port or self.listen.port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def bound_to(self, port: int) -> WorkerConfig:
        """This configuration once the server is bound: with --worker_port's port 0 the system
        chose `port`, which the worker's default id and its advertised address then use."""
        return replace(self, listen=replace(self.listen, port=port))


def advertised_host(
    listen: ListenAddress, env: Mapping[str, str], hostname: str
) -> tuple[str, int | None]:
    """WORKER_ADDRESS (and its port, if any), else the bound host when specific, else this
    machine's hostname. Never a wildcard: coordinators dial this address."""
    explicit = env.get("WORKER_ADDRESS", "").strip()
    if explicit:
        host, port = split_address(explicit)
    elif not is_wildcard_host(listen.host):
        host, port = listen.host, None
    else:
        host, port = hostname, None
    if is_wildcard_host(host):
        raise ConfigError(
            f"WORKER_ADDRESS {explicit!r} is a wildcard that coordinators cannot dial; "
            "give this worker's hostname or IP address"
        )
    return host, port


def split_address(text: str) -> tuple[str, int | None]:
    """'host', 'host:port', a bare IPv6 address, '[v6]' or '[v6]:port' -> (host, port or None)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:  # a name, an IPv4 address or a bare IPv6 address
        host, port = text, ""
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        raise ConfigError(f"WORKER_ADDRESS: expected host or host:port, got {text!r}")
    return host, int(port) if port else None


def parse_coordinators(value: str) -> tuple[str, ...]:
    targets = tuple(part.strip() for part in value.split(",") if part.strip())
    if not targets:
        raise ConfigError("--coordinator: give at least one host:port")
    for target in targets:
        if parse_listen(target, "--coordinator").port == 0:
            raise ConfigError(f"--coordinator: {target!r} names port 0, which cannot be dialed")
    return targets


def output_retention(value: str) -> float | None:
    text = value.strip().lower()
    if text == "off":
        return None
    seconds = parse_duration(text, "--output-retention")
    if seconds < 1:
        raise ConfigError("--output-retention must be at least 1s (or off)")
    return seconds


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
        "--output-cap-bytes",
        type=int,
        default=DEFAULT_OUTPUT_CAP_BYTES,
        help="bytes of each command's output kept in the database at each end, the first and "
        f"the last (default {DEFAULT_OUTPUT_CAP_BYTES}; 0 keeps none; at most "
        f"{MAX_OUTPUT_CAP_BYTES})",
    )
    parser.add_argument(
        "--output-retention",
        default="7d",
        help="delete output files last written longer ago than this: 90s, 15m, 12h, 7d, or off "
        "(default 7d)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without SKIPLOCK_CLUSTER_TOKEN or mutual TLS",
    )
    parser.add_argument(
        "--pass-env",
        default="",
        help="comma-separated names of this worker's environment variables that commands get "
        "too (commands otherwise see only PATH, HOME, LANG, TZ=UTC and their own env); "
        "SKIPLOCK_*, POSTGRES_*, PG* and DATABASE_URL* are refused",
    )
    parser.add_argument(
        "--queues",
        default=env.get("SKIPLOCK_QUEUES") or DEFAULT_QUEUE,
        help="comma-separated queues to take tasks from (default $SKIPLOCK_QUEUES or default)",
    )
    parser.add_argument(
        "--labels",
        default=env.get("SKIPLOCK_LABELS", ""),
        help="comma-separated key=value labels tasks may ask for, e.g. gpu=a100,zone=eu "
        "(default $SKIPLOCK_LABELS or none)",
    )
    parser.add_argument(
        "--output-file-max-bytes",
        type=int,
        default=DEFAULT_OUTPUT_FILE_MAX_BYTES,
        help="bytes of a command's output written to its output file at most; the rest is "
        f"read and dropped, with a note (default {DEFAULT_OUTPUT_FILE_MAX_BYTES}, 1 GiB; "
        "0: no limit)",
    )
    parser.add_argument(
        "--run-as",
        default=None,
        help="user name or id commands run as, with that user's groups and HOME (the worker "
        "must run as root); default: the worker's own user",
    )
    parser.add_argument(
        "--output-group",
        default=None,
        help="group name or id given the output files, readable by it (mode 0640); "
        "default: mode 0600, the worker's user alone",
    )
    add_ready_file_flag(parser)
    add_log_flags(parser, env)
    add_metrics_flag(parser, env)
    add_tls_flags(parser, env, ca=True)
    args = parser.parse_args(argv)
    log = log_settings(args)
    if not 1 <= args.slots <= 1000:
        raise ConfigError("--slots must be between 1 and 1000")
    if args.drain_timeout < 0 or args.kill_grace < 0:
        raise ConfigError("--drain-timeout and --kill-grace must not be negative")
    if args.output_file_max_bytes < 0:
        raise ConfigError("--output-file-max-bytes must not be negative")
    if not 0 <= args.output_cap_bytes <= MAX_OUTPUT_CAP_BYTES:
        raise ConfigError(f"--output-cap-bytes must be between 0 and {MAX_OUTPUT_CAP_BYTES}")
    security = GrpcSecurity(
        token=cluster_token(env), tls=tls_material(args.tls_cert, args.tls_key, args.tls_ca)
    )
    listen = secure_listen(
        parse_listen(args.worker_port, "--worker_port"),
        security.authenticates_callers,
        args.insecure,
        "--worker_port",
        "SKIPLOCK_CLUSTER_TOKEN or mutual TLS",
    )
    try:
        queues = parse_queues(args.queues)
    except ValueError as exc:
        raise ConfigError(f"--queues: {exc}") from None
    try:
        labels = parse_labels(args.labels)
    except ValueError as exc:
        raise ConfigError(f"--labels: {exc}") from None
    run_as = None if args.run_as is None else run_as_user(args.run_as)
    hostname = socket.gethostname()
    advertise_host, advertise_port = advertised_host(listen, env, hostname)
    return WorkerConfig(
        listen=listen,
        coordinators=parse_coordinators(args.coordinator),
        slots=args.slots,
        # Absolute, so the path reported for each output file means the same to every reader.
        output_dir=Path(args.output_dir).absolute(),
        drain_timeout=args.drain_timeout,
        given_id=env.get("WORKER_ID", "").strip() or None,
        hostname=hostname,
        advertise_host=advertise_host,
        advertise_port=advertise_port,
        security=security,
        ready_file=args.ready_file,
        log=log,
        metrics_port=metrics_port(args.metrics_port),
        kill_grace=args.kill_grace,
        output_cap_bytes=args.output_cap_bytes,
        queues=queues,
        labels=tuple(sorted(labels.items())),
        output_retention=output_retention(args.output_retention),
        command_env=command_base(env, parse_pass_env(args.pass_env), run_as),
        run_as=run_as,
        output_group=None if args.output_group is None else group_id(args.output_group),
        output_file_max_bytes=args.output_file_max_bytes,
    )


def run_as_user(value: str) -> RunAs:
    """--run-as: a user name or id, with its groups and home; only root may switch users."""
    if os.geteuid() != 0:
        raise ConfigError("--run-as: the worker must run as root to run commands as another user")
    text = value.strip()
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        raise ConfigError(f"--run-as: no user {text!r}") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(entry.pw_uid, entry.pw_gid, groups, entry.pw_dir or "/")


def command_base(
    env: Mapping[str, str], pass_env: tuple[str, ...], run_as: RunAs | None
) -> tuple[tuple[str, str], ...]:
    """The base environment of commands; HOME is the --run-as user's when there is one."""
    base = dict(base_environment(env, pass_env))
    if run_as is not None:
        base["HOME"] = run_as.home
    return tuple(base.items())


def group_id(value: str) -> int:
    """A group name or number, as --output-group gives it."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError(f"--output-group: no group named {text!r}") from None
