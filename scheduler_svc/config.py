"""The scheduler's configuration, built once from flags and the environment."""

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
    database_url,
    parse_listen,
    secret,
    secure_listen,
    tls_material,
)
from common.logs import DEFAULT_LOGS, LogSettings, add_log_flags, log_settings
from scheduler_svc.auth import (
    ApiToken,
    Role,
    TokenBook,
    TokenError,
    api_token,
    parse_token_lines,
)
from scheduler_svc.backpressure import BacklogLimits
from scheduler_svc.edge import EdgeLimits

# The environment's own tokens: one that may write and one that may only read.
ENV_TOKENS = (
    ("SKIPLOCK_API_TOKEN", "env", Role.WRITE),
    ("SKIPLOCK_API_READ_TOKEN", "env-read", Role.READ),
)


DEFAULT_EDGE = EdgeLimits()
NO_BACKLOG_LIMITS = BacklogLimits()


def env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value[:40]!r}") from None


@dataclass(frozen=True)
class SchedulerConfig:
    listen: ListenAddress
    database_url: str
    pool_max_size: int = 10
    ready_file: Path | None = None
    log: LogSettings = DEFAULT_LOGS
    api_tokens: tuple[ApiToken, ...] = ()
    # HTTPS when both are given: PEM certificate (chain) and its key
    tls_cert: Path | None = None
    tls_key: Path | None = None
    edge: EdgeLimits = DEFAULT_EDGE
    backlog: BacklogLimits = NO_BACKLOG_LIMITS


def load_api_tokens(tokens_file: str | None, env: Mapping[str, str]) -> tuple[ApiToken, ...]:
    """The tokens file's lines, then SKIPLOCK_API_TOKEN and SKIPLOCK_API_READ_TOKEN (each
    also from the file its *_FILE variable names)."""
    tokens: list[ApiToken] = []
    try:
        if tokens_file:
            try:
                text = Path(tokens_file).read_text()
            except OSError as exc:
                raise ConfigError(f"API tokens file {tokens_file}: {exc.strerror}") from None
            tokens += parse_token_lines(text, tokens_file)
        for variable, name, role in ENV_TOKENS:
            value = secret(env, variable)
            if value:
                tokens.append(api_token(name, role.value, value, where=variable))
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    return tuple(tokens)


def load(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> SchedulerConfig:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="skiplock-scheduler", description=__doc__)
    parser.add_argument(
        "--scheduler_port",
        "--scheduler-port",
        default=":8081",
        help="[host]:port to serve HTTP on (default :8081, loopback without API tokens)",
    )
    parser.add_argument("--host", default=None, help="interface to bind; overrides the host part")
    parser.add_argument("--pool-size", type=int, default=10, help="max database connections")
    add_ready_file_flag(parser)
    add_log_flags(parser, env)
    parser.add_argument(
        "--api-tokens-file",
        default=env.get("SKIPLOCK_API_TOKENS_FILE") or None,
        help="file of API tokens, one '<name> <read|write> <token>' per line "
        "(default $SKIPLOCK_API_TOKENS_FILE)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond loopback without API tokens",
    )
    add_tls_flags(parser, env, ca=False)
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=EdgeLimits.request_timeout,
        help="seconds a request (headers and body) may take to arrive (default 30)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=EdgeLimits.max_connections,
        help="open HTTP connections at most; more are closed at once (default 1000)",
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=env_int(env, "SKIPLOCK_MAX_QUEUED"),
        help="queued tasks in all queues at most; beyond it submissions answer 429 "
        "(default $SKIPLOCK_MAX_QUEUED or no limit)",
    )
    parser.add_argument(
        "--max-queued-per-queue",
        type=int,
        default=env_int(env, "SKIPLOCK_MAX_QUEUED_PER_QUEUE"),
        help="queued tasks in any one queue at most; beyond it submissions answer 429 "
        "(default $SKIPLOCK_MAX_QUEUED_PER_QUEUE or no limit)",
    )
    args = parser.parse_args(argv)
    log = log_settings(args)
    for flag, value in (
        ("--max-queued", args.max_queued),
        ("--max-queued-per-queue", args.max_queued_per_queue),
    ):
        if value is not None and not 1 <= value <= 1_000_000_000:
            raise ConfigError(f"{flag} must be between 1 and 1000000000")
    if not 0.1 <= args.request_timeout <= 3600:
        raise ConfigError("--request-timeout must be between 0.1 and 3600 seconds")
    if not 1 <= args.max_connections <= 1_000_000:
        raise ConfigError("--max-connections must be between 1 and 1000000")
    tls_material(args.tls_cert, args.tls_key, None)  # both or neither, and readable now
    listen = parse_listen(args.scheduler_port, "--scheduler_port")
    if args.host is not None:
        listen = ListenAddress(args.host, listen.port)
    tokens = load_api_tokens(args.api_tokens_file, env)
    try:
        TokenBook(tokens)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    credential = "API tokens (SKIPLOCK_API_TOKEN or --api-tokens-file)"
    listen = secure_listen(listen, bool(tokens), args.insecure, "--scheduler_port", credential)
    return SchedulerConfig(
        listen=listen,
        database_url=database_url(env),
        pool_max_size=args.pool_size,
        backlog=BacklogLimits(args.max_queued, args.max_queued_per_queue),
        ready_file=args.ready_file,
        log=log,
        api_tokens=tokens,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
        edge=EdgeLimits(request_timeout=args.request_timeout, max_connections=args.max_connections),
    )
