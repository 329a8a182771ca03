"""Logging for every service, configured in one place: structlog renders each line as text for
people or as one JSON object for machines, and the standard library's loggers (ours, uvicorn's,
grpc's) are routed through the same renderer, so every line of a service has one format.

Events carry context as fields (`task_id`, `attempt`, `worker_id`, `schedule_id`, ...), never
formatted into the message, so a JSON consumer can filter on them."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from common.config import ConfigError

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"
    level: str = "info"


DEFAULT_LOGS = LogSettings()


def add_log_flags(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """--log-format and --log-level, defaulting to SKIPLOCK_LOG_FORMAT and SKIPLOCK_LOG_LEVEL."""
    parser.add_argument(
        "--log-format",
        default=env.get("SKIPLOCK_LOG_FORMAT", "").strip().lower() or "text",
        help="text (for people) or json (one object per line) (default $SKIPLOCK_LOG_FORMAT "
        "or text)",
    )
    parser.add_argument(
        "--log-level",
        default=env.get("SKIPLOCK_LOG_LEVEL", "").strip().lower() or "info",
        help="debug, info, warning or error (default $SKIPLOCK_LOG_LEVEL or info)",
    )


def log_settings(args: argparse.Namespace) -> LogSettings:
    fmt, level = str(args.log_format).lower(), str(args.log_level).lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"--log-format: expected one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    if level not in LOG_LEVELS:
        raise ConfigError(f"--log-level: expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return LogSettings(fmt, level)


def configure(service: str, settings: LogSettings = DEFAULT_LOGS) -> None:
    """Route structlog and the standard library through one renderer on stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_service(service),
    ]
    renderer: Any
    if settings.format == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def add_service(service: str) -> Any:
    def processor(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return processor


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger: `log.info("task started", task_id=..., attempt=...)`."""
    return structlog.stdlib.get_logger(name)
