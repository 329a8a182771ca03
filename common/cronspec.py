"""Cron maths for skiplock schedules: parsing, validation and DST-aware fire times.

cronsim does the calendar field matching. This module adds validation with readable messages,
the @-macros, ``@every <duration>`` and one DST policy that holds for every expression shape:

* Wall-clock schedules (hour field does not start with ``*``, e.g. ``30 2 * * *``) are matched
  against naive local time. A local time that falls in a spring-forward gap fires once, at the
  first real instant after the gap; a local time that occurs twice in a fall-back fold fires once,
  at its first occurrence.
* Hour-wildcard schedules (``*/15 * * * *``, ``0 * * * *``, ``@hourly``) fire at every real instant
  whose local time matches, so they keep their spacing in absolute time: both 01:00 EDT and
  01:00 EST fire, and local times inside a gap (which never happen) are not invented.
* ``@every`` fires at ``anchor + k * interval`` (k >= 1) in absolute time; the zone is irrelevant.

Fire times are strictly increasing and always returned as aware UTC datetimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "CronError",
    "CronSpec",
    "fire_times",
    "fire_times_between",
    "iter_fire_times",
    "next_fire",
    "parse",
]

MIN_EVERY_SECONDS = 1
MAX_EVERY_SECONDS = 366 * 86400
# parse() rejects expressions whose next fire is further away than this.
MUST_FIRE_WITHIN = timedelta(days=5 * 366)
# Candidates that a DST gap or fold can swallow in a row (an hour of per-second fires, with room
# for zones that once skipped a whole day). Beyond this something is wrong: fail loudly.
_MAX_SKIPPED = 200_000

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY_HELP = "@every needs a duration like 30s, 5m or 1h30m"
_EVERY_RE = re.compile(r"@every(?:\s+(?P<duration>\S.*))?", re.IGNORECASE)
_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_NUMBER_RE = re.compile(r"[0-9]+")

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# name -> (low, high, symbolic names, value of the first name)
_FIELDS: dict[str, tuple[int, int, tuple[str, ...], int]] = {
    "second": (0, 59, (), 0),
    "minute": (0, 59, (), 0),
    "hour": (0, 23, (), 0),
    "day-of-month": (1, 31, (), 0),
    "month": (1, 12, _MONTH_NAMES, 1),
    "day-of-week": (0, 7, _DAY_NAMES, 0),
}
_FIVE = ("minute", "hour", "day-of-month", "month", "day-of-week")
_SIX = ("second", *_FIVE)
# Zones without transitions that can skip the DST bookkeeping entirely.
_PLAIN_UTC = frozenset({"UTC", "Etc/UTC"})


class CronError(ValueError):
    """An expression or time zone that skiplock cannot schedule; the message names the problem."""


@dataclass(frozen=True)
class CronSpec:
    """A validated schedule. Build it with parse(), never directly."""

    expression: str  # as given by the user, stripped
    timezone: str  # IANA name
    every_seconds: int | None  # set for @every, else None
    cron: str | None  # 5/6-field expression for cronsim (macros expanded); None for @every
    wall_clock: bool  # True: fixed local times with the gap/fold policy; False: absolute spacing
    zone: ZoneInfo = field(repr=False, compare=False)


def parse(expression: str, timezone: str = "UTC", *, now: datetime | None = None) -> CronSpec:
    """Validate an expression and zone; `now` (default: the clock) anchors the can-it-fire check."""
    text = expression.strip()
    zone = load_zone(timezone)
    if not text:
        raise CronError("cron expression is empty")
    if _EVERY_RE.fullmatch(text):
        seconds = _parse_every(text)
        return CronSpec(text, timezone, seconds, None, False, zone)
    cron = _expand_macro(text)
    fields = cron.split()
    names = _field_names(fields)
    for name, value in zip(names, fields, strict=True):
        _validate_field(name, value)
    cron = " ".join(fields)
    try:
        CronSim(cron, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise _explain_cronsim_error(text, names, fields, exc) from None
    # Hour wildcards are "every so often" schedules; anything else names wall-clock hours.
    wall_clock = not fields[names.index("hour")].startswith("*")
    spec = CronSpec(text, timezone, None, cron, wall_clock, zone)
    _check_fires_soon(spec, now if now is not None else datetime.now(UTC))
    return spec


def next_fire(spec: CronSpec, after: datetime, anchor: datetime) -> datetime:
    """First fire time strictly after `after`; `anchor` (the schedule's creation) drives @every."""
    return next(_fires(spec, after, anchor))


def iter_fire_times(spec: CronSpec, after: datetime, anchor: datetime) -> Iterator[datetime]:
    """Fire times strictly after `after`, in increasing order, computed lazily without end."""
    return _fires(spec, after, anchor)


def fire_times(spec: CronSpec, after: datetime, anchor: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after`, in increasing order."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    result: list[datetime] = []
    if count == 0:
        return result
    for fire in _fires(spec, after, anchor):
        result.append(fire)
        if len(result) == count:
            break
    return result


def fire_times_between(
    spec: CronSpec,
    start_exclusive: datetime,
    end_inclusive: datetime,
    anchor: datetime,
    limit: int,
) -> list[datetime]:
    """Fire times in (start_exclusive, end_inclusive], at most `limit` of them."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    end = _to_utc(end_inclusive, "end_inclusive")
    result: list[datetime] = []
    if limit == 0:
        return result
    for fire in _fires(spec, start_exclusive, anchor):
        if fire > end:
            break
        result.append(fire)
        if len(result) == limit:
            break
    return result


# --- parsing -------------------------------------------------------------------------------------


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone of that name, or a CronError saying it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError/OSError cover keys that are not zone names at all (paths, empty strings).
        raise CronError(
            f"unknown time zone {name[:64]!r}; use an IANA name like 'Europe/London'"
        ) from None


def _parse_every(text: str) -> int:
    match = _EVERY_RE.fullmatch(text)
    duration = match.group("duration") if match else None
    if duration is None:
        raise CronError(_EVERY_HELP)
    parts = _DURATION_RE.fullmatch("".join(duration.split()).lower())
    if parts is None or not any(parts.groups()):
        raise CronError(f"{_EVERY_HELP}; got '{duration.strip()}'")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in parts.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total < MIN_EVERY_SECONDS:
        raise CronError(f"@every interval must be at least {MIN_EVERY_SECONDS}s")
    if total > MAX_EVERY_SECONDS:
        raise CronError(f"@every interval must be at most {MAX_EVERY_SECONDS // 86400}d")
    return total


def _expand_macro(text: str) -> str:
    if not text.startswith("@"):
        return text
    macro = text.lower()
    if macro not in _MACROS:
        known = ", ".join([*_MACROS, "@every <duration>"])
        raise CronError(f"unknown macro '{text}'; use one of {known}")
    return _MACROS[macro]


def _field_names(fields: list[str]) -> tuple[str, ...]:
    if len(fields) == 5:
        return _FIVE
    if len(fields) == 6:
        return _SIX
    raise CronError(
        "cron expression needs 5 fields (minute hour day-of-month month day-of-week) "
        f"or 6 with seconds first, got {len(fields)}"
    )


def _validate_field(name: str, text: str) -> None:
    for term in text.split(","):
        if not term:
            raise CronError(f"cron field '{name}' has an empty list item in '{text}'")
        _validate_term(name, term)


def _validate_term(name: str, term: str) -> None:
    upper = term.upper()
    if name == "day-of-month" and upper in ("L", "LW"):
        return
    if name == "day-of-week" and "#" in term:
        day, nth = term.split("#", 1)
        _field_value(name, day)
        if not _NUMBER_RE.fullmatch(nth) or not 1 <= int(nth) <= 5:
            raise CronError(f"cron field '{name}' value '{term}': the number after # must be 1-5")
        return
    if name == "day-of-week" and upper.endswith("L") and len(term) > 1:
        if not _NUMBER_RE.fullmatch(term[:-1]):
            raise CronError(f"cron field '{name}' value '{term}': 'L' must follow a day number 0-7")
        _field_value(name, term[:-1])
        return
    base, slash, step = term.partition("/")
    if slash and (not _NUMBER_RE.fullmatch(step) or int(step) == 0):
        raise CronError(f"cron field '{name}' step '{step}' must be a whole number of at least 1")
    if base == "*":
        return
    if "-" in base:
        first, last = base.split("-", 1)
        low, high = _field_value(name, first), _field_value(name, last)
        if high < low:
            raise CronError(
                f"cron field '{name}' range {base} runs backwards; split it into a list instead"
            )
        return
    _field_value(name, base)


def _field_value(name: str, token: str) -> int:
    low, high, symbols, offset = _FIELDS[name]
    if _NUMBER_RE.fullmatch(token):
        value = int(token)
        if not low <= value <= high:
            raise CronError(f"cron field '{name}' value {value} out of range {low}-{high}")
        return value
    if token.upper() in symbols:
        return symbols.index(token.upper()) + offset
    if symbols:
        raise CronError(
            f"cron field '{name}' value '{token}' is not a number {low}-{high} "
            f"or a name {symbols[0]}-{symbols[-1]}"
        )
    raise CronError(f"cron field '{name}' value '{token}' is not a number {low}-{high}")


def _explain_cronsim_error(
    text: str, names: tuple[str, ...], fields: list[str], exc: CronSimError
) -> CronError:
    # Our own checks accept only what cronsim's grammar accepts, so the one rejection left is
    # cronsim's "no selected month has that many days" check.
    if str(exc) == "Bad day-of-month":
        dom = fields[names.index("day-of-month")]
        month = fields[names.index("month")]
        return CronError(
            f"cron expression '{text}' can never fire: day-of-month {dom} does not occur "
            f"in month {month}"
        )
    return CronError(f"invalid cron expression '{text}': {exc}")


def _check_fires_soon(spec: CronSpec, now: datetime) -> None:
    start = _to_utc(now, "now")
    try:
        first = next(_cron_fires(spec, start))
    except CronError:
        first = None
    if first is None or first - start > MUST_FIRE_WITHIN:
        raise CronError(
            f"cron expression '{spec.expression}' does not fire within the next 5 years"
        )


# --- fire times ----------------------------------------------------------------------------------


def _to_utc(value: datetime, label: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{label} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _fires(spec: CronSpec, after: datetime, anchor: datetime) -> Iterator[datetime]:
    start = _to_utc(after, "after")
    origin = _to_utc(anchor, "anchor")
    if spec.every_seconds is not None:
        return _every_fires(spec.every_seconds, start, origin)
    return _cron_fires(spec, start)


def _every_fires(seconds: int, after: datetime, anchor: datetime) -> Iterator[datetime]:
    step = timedelta(seconds=seconds)
    k = max(1, (after - anchor) // step + 1)
    fire = anchor + k * step
    while True:
        yield fire
        fire += step


def _cron_fires(spec: CronSpec, after: datetime) -> Iterator[datetime]:
    """Strictly increasing UTC fire times after `after` (aware UTC)."""
    assert spec.cron is not None
    zone = spec.zone
    plain = zone.key in _PLAIN_UTC
    if plain or spec.wall_clock:
        # Naive local wall time: cronsim does pure calendar maths, we place each result.
        local: datetime = after.astimezone(zone).replace(tzinfo=None)
    else:
        # Aware local time: cronsim steps through real instants in UTC and matches local fields.
        local = after.astimezone(zone)
    candidates = CronSim(spec.cron, local)
    last = after
    while True:
        for _ in range(_MAX_SKIPPED):
            try:
                candidate = next(candidates)
            except StopIteration:
                raise CronError(
                    f"cron expression '{spec.expression}' has no fire time within 50 years"
                ) from None
            if plain:
                fire = candidate.replace(tzinfo=UTC)
            elif spec.wall_clock:
                fire = _place_wall_time(candidate, zone)
            else:
                fire = candidate.astimezone(UTC)
            # A gap maps many wall times onto one instant and a fold's second pass maps to
            # instants already passed: keep only real progress.
            if fire > last:
                break
        else:
            raise CronError(f"cron expression '{spec.expression}' stopped making progress")
        last = fire
        yield fire


def _place_wall_time(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a naive local time fires at: first occurrence in a fold, gap end in a gap."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """First real instant after the spring-forward gap that swallows `wall`."""
    # Read with the offsets from both sides of the gap, the wall time brackets the transition.
    instants = sorted(wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1))
    low, high = int(instants[0].timestamp()), int(instants[1].timestamp())
    before = instants[0].astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)
