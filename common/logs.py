"""Logging for every service, configured in one place: structlog renders each line as text for
people or as one JSON object for machines, and the standard library's loggers (ours, uvicorn's,
grpc's) are routed through the same renderer, so every line of a service has one format.

Events carry context as fields (`task_id`, `attempt`, `worker_id`, `schedule_id`, ...), never
formatted into the message, so a JSON consumer can filter on them."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
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
    """Render structlog's events and the standard library's records alike on stderr.

    skiplock's own events (one per task transition, so on the hot path) go through structlog's
    native filtering logger straight to stderr: about half the cost of a trip through the
    standard library. Other libraries' records are rendered by the same processors. The chain
    is short on purpose: one processor stamps level, time and service, then the renderer."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    stamp = Stamp(service)
    renderer: Any = (
        structlog.processors.JSONRenderer() if settings.format == "json" else render_text
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            stamp,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


# Logging methods whose level has another name (as structlog's own add_log_level maps them).
METHOD_LEVELS = {"warn": "warning", "exception": "error"}


class Stamp:
    """What every line carries besides its own fields, added in one processor: `logger` (as the
    standard library's records have it; get_logger cannot bind that key), `level`, `timestamp`
    (UTC, ISO 8601, microseconds, 'Z') and `service`."""

    def __init__(self, service: str) -> None:
        self.service = service
        # (second, that second formatted): one tuple, so threads logging at once never mix two
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if "logger_name" in event:
            event["logger"] = event.pop("logger_name")
        event["level"] = METHOD_LEVELS.get(method, method)
        event["timestamp"] = self.now()
        event.setdefault("service", self.service)
        return event

    def now(self) -> str:
        """The time as '2026-11-30T19:34:10.332439Z'; the part up to the second is formatted
        once per second (datetime's isoformat per line cost more than the rest of the stamp)."""
        now = time.time()
        second, prefix = self._second
        if int(now) != second:
            second = int(now)
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, prefix)
        return f"{prefix}.{int((now - second) * 1_000_000):06d}Z"


# Shown first in a text line, in this order; every other field follows as key=value.
TEXT_HEAD = ("timestamp", "level", "event", "service", "logger")


def render_text(logger: Any, method: str, event: dict[str, Any]) -> str:
    """'2026-11-30T19:34:10.332439Z [info   ] task accepted  task_id=… attempt=0 …'"""
    head = (
        f"{event.pop('timestamp', '')} [{event.pop('level', method):<7}] "
        f"{event.pop('event', '')}  service={event.pop('service', '')} "
        f"logger={event.pop('logger', '')}"
    )
    tail = " ".join([f"{key}={value}" for key, value in event.items() if key != "exception"])
    text = f"{head} {tail}" if tail else head
    exception = event.get("exception")
    return f"{text}\n{exception}" if exception else text


def get_logger(name: str) -> Any:
    """A structlog logger: `log.info("task started", task_id=..., attempt=...)`; resolved on
    first use, so modules may create theirs at import, before `configure`."""
    return structlog.get_logger(logger_name=name)
