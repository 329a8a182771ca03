"""Durations and instants as people type them on the command line."""

from __future__ import annotations

import re
from datetime import datetime

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(
    rf"(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?"
)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Seconds in '90', '5s', '2m', '1h30m' or '1d2h'; units in that order, each at most once."""
    text = text.strip().lower()
    if re.fullmatch(_NUMBER, text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"{text!r} is not a duration like 5s, 2m, 1h30m or 90")
    return sum(float(v) * _UNIT_SECONDS[unit] for unit, v in match.groupdict().items() if v)


def parse_instant(text: str) -> str:
    """An RFC 3339 timestamp with an explicit offset, normalised for the API."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time like 2026-01-02T15:04:05Z") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} needs a UTC offset, e.g. Z or +02:00")
    return parsed.isoformat()
