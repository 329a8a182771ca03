"""Table-driven tests for common.cronspec. Every expected fire time is written out in UTC."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from common.cronspec import CronError, CronSpec, fire_times, fire_times_between, next_fire, parse

NY = "America/New_York"
LONDON = "Europe/London"
LORD_HOWE = "Australia/Lord_Howe"

# Thursday 2026-01-15 10:07:03 UTC: the reference instant for the calendar tables.
THU = datetime(2026, 1, 15, 10, 7, 3, tzinfo=UTC)


def z(text: str) -> datetime:
    """A UTC instant written as 'YYYY-MM-DDTHH:MM[:SS[.ffffff]]'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def zs(*texts: str) -> list[datetime]:
    return [z(t) for t in texts]


# --- single next fire, UTC -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # macros
        ("@yearly", "2027-01-01T00:00"),
        ("@annually", "2027-01-01T00:00"),
        ("@monthly", "2026-02-01T00:00"),
        ("@weekly", "2026-01-18T00:00"),  # next Sunday
        ("@daily", "2026-01-16T00:00"),
        ("@midnight", "2026-01-16T00:00"),
        ("@hourly", "2026-01-15T11:00"),
        ("@DAILY", "2026-01-16T00:00"),
        # names, any case; Sunday is both 0 and 7
        ("0 9 * * MON", "2026-01-19T09:00"),
        ("0 9 * * mon", "2026-01-19T09:00"),
        ("0 0 * * SUN", "2026-01-18T00:00"),
        ("0 0 * * 0", "2026-01-18T00:00"),
        ("0 0 * * 7", "2026-01-18T00:00"),
        ("30 8 * * MON-FRI", "2026-01-16T08:30"),
        ("0 12 * * SAT,SUN", "2026-01-17T12:00"),
        ("0 0 1 MAR *", "2026-03-01T00:00"),
        ("0 0 1 jun-aug *", "2026-06-01T00:00"),
        ("0 0 1 JAN *", "2027-01-01T00:00"),
        ("0 0 * * MON#3", "2026-01-19T00:00"),  # third Monday
        ("0 0 * * 5L", "2026-01-30T00:00"),  # last Friday
        ("0 0 L * *", "2026-01-31T00:00"),  # last day of month
        # ranges, steps, lists
        ("*/15 * * * *", "2026-01-15T10:15"),
        ("5-10 * * * *", "2026-01-15T10:08"),
        ("0,30 * * * *", "2026-01-15T10:30"),
        ("10-50/20 * * * *", "2026-01-15T10:10"),
        ("7 * * * *", "2026-01-15T11:07"),  # 10:07:00 is before 10:07:03
        ("0 */6 * * *", "2026-01-15T12:00"),
        ("0 9-17/4 * * *", "2026-01-15T13:00"),
        ("5 10 * * *", "2026-01-16T10:05"),
        ("15 10 * * *", "2026-01-15T10:15"),
        ("0 12 1,15 * *", "2026-01-15T12:00"),
        ("0 0 1 */3 *", "2026-04-01T00:00"),
        ("0 0 13 * *", "2026-02-13T00:00"),
        ("0 0 13 * FRI", "2026-01-16T00:00"),  # day-of-month OR day-of-week, as in cron
        # six fields, seconds first
        ("* * * * * *", "2026-01-15T10:07:04"),
        ("*/10 * * * * *", "2026-01-15T10:07:10"),
        ("15,45 * * * * *", "2026-01-15T10:07:15"),
        ("30 0 12 * * *", "2026-01-15T12:00:30"),
        ("0 0 0 1 1 *", "2027-01-01T00:00"),
    ],
)
def test_next_fire_utc(expression: str, expected: str) -> None:
    spec = parse(expression)
    assert next_fire(spec, THU, THU) == z(expected)


# --- sequences: month ends, leap days, DST -------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # the 31st skips short months; the 30th skips February
        ("0 0 31 * *", "UTC", "2026-01-31T00:00",
         ["2026-03-31T00:00", "2026-05-31T00:00", "2026-07-31T00:00", "2026-08-31T00:00"]),
        ("0 0 30 * *", "UTC", "2026-01-30T00:00", ["2026-03-30T00:00", "2026-04-30T00:00"]),
        ("0 0 L * *", "UTC", "2026-01-15T00:00",
         ["2026-01-31T00:00", "2026-02-28T00:00", "2026-03-31T00:00"]),
        ("0 0 L 2 *", "UTC", "2027-03-01T00:00", ["2028-02-29T00:00", "2029-02-28T00:00"]),
        # leap day
        ("0 0 29 2 *", "UTC", "2026-01-15T10:07:03",
         ["2028-02-29T00:00", "2032-02-29T00:00", "2036-02-29T00:00"]),
        ("0 0 29 2 *", "UTC", "2028-02-29T00:00", ["2032-02-29T00:00"]),
        # non-hour offset, no DST
        ("0 9 * * *", "Asia/Kolkata", "2026-01-15T00:00", ["2026-01-15T03:30"]),
        # New York spring forward 2026-03-08 02:00 EST -> 03:00 EDT: gap times fire once at 03:00
        ("30 2 * * *", NY, "2026-03-06T12:00",
         ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30", "2026-03-10T06:30"]),
        ("0 2 * * *", NY, "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:00"]),
        ("59 2 * * *", NY, "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:59"]),
        ("0 3 * * *", NY, "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T07:00"]),
        ("*/15 2 * * *", NY, "2026-03-08T06:00",
         ["2026-03-08T07:00", "2026-03-09T06:00", "2026-03-09T06:15"]),
        ("0 30 2 * * *", NY, "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:30"]),
        ("30 2 8 3 *", NY, "2026-01-01T00:00", ["2026-03-08T07:00", "2027-03-08T07:30"]),
        # New York fall back 2026-11-01 02:00 EDT -> 01:00 EST: fold times fire once, first pass
        ("30 1 * * *", NY, "2026-10-31T12:00", ["2026-11-01T05:30", "2026-11-02T06:30"]),
        ("30 1 * * *", NY, "2026-11-01T06:15", ["2026-11-02T06:30"]),  # after is in second pass
        ("0 1 * * *", NY, "2026-10-31T12:00", ["2026-11-01T05:00", "2026-11-02T06:00"]),
        ("0 2 * * *", NY, "2026-10-31T12:00", ["2026-11-01T07:00", "2026-11-02T07:00"]),
        ("*/20 1 * * *", NY, "2026-11-01T04:00",
         ["2026-11-01T05:00", "2026-11-01T05:20", "2026-11-01T05:40", "2026-11-02T06:00"]),
        # New York, hour wildcard: every real hour / quarter, both 01:00 EDT and 01:00 EST
        ("0 * * * *", NY, "2026-11-01T03:30",
         ["2026-11-01T04:00", "2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00",
          "2026-11-01T08:00"]),
        ("@hourly", NY, "2026-11-01T03:30",
         ["2026-11-01T04:00", "2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00"]),
        ("30 * * * *", NY, "2026-11-01T05:45", ["2026-11-01T06:30", "2026-11-01T07:30"]),
        ("*/15 * * * *", NY, "2026-11-01T05:40",
         ["2026-11-01T05:45", "2026-11-01T06:00", "2026-11-01T06:15"]),
        ("0 * * * *", NY, "2026-03-08T05:30",
         ["2026-03-08T06:00", "2026-03-08T07:00", "2026-03-08T08:00"]),
        ("*/15 * * * *", NY, "2026-03-08T06:40",
         ["2026-03-08T06:45", "2026-03-08T07:00", "2026-03-08T07:15"]),
        # local 00:00 EDT, (01:00 not selected), 02:00 EST, 04:00 EST
        ("0 */2 * * *", NY, "2026-11-01T03:30",
         ["2026-11-01T04:00", "2026-11-01T07:00", "2026-11-01T09:00"]),
        # London: 2026-03-29 01:00 GMT -> 02:00 BST, 2026-10-25 02:00 BST -> 01:00 GMT
        ("30 1 * * *", LONDON, "2026-03-28T00:00",
         ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"]),
        ("0 1 * * *", LONDON, "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:00"]),
        ("30 1 * * *", LONDON, "2026-10-24T12:00", ["2026-10-25T00:30", "2026-10-26T01:30"]),
        ("0 * * * *", LONDON, "2026-10-24T23:30",
         ["2026-10-25T00:00", "2026-10-25T01:00", "2026-10-25T02:00"]),
        ("*/30 * * * *", LONDON, "2026-03-29T00:15",
         ["2026-03-29T00:30", "2026-03-29T01:00", "2026-03-29T01:30"]),
        # Lord Howe, 30-minute shifts: 2026-04-05 02:00 LHDT(+11) -> 01:30 LHST(+10:30),
        # 2026-10-04 02:00 LHST -> 02:30 LHDT
        ("15 2 * * *", LORD_HOWE, "2026-10-02T12:00",
         ["2026-10-02T15:45", "2026-10-03T15:30", "2026-10-04T15:15"]),
        ("45 1 * * *", LORD_HOWE, "2026-04-03T12:00",
         ["2026-04-03T14:45", "2026-04-04T14:45", "2026-04-05T15:15"]),
        ("0 2 * * *", LORD_HOWE, "2026-04-04T12:00", ["2026-04-04T15:30", "2026-04-05T15:30"]),
        ("*/15 * * * *", LORD_HOWE, "2026-04-04T14:40",
         ["2026-04-04T14:45", "2026-04-04T15:00", "2026-04-04T15:15", "2026-04-04T15:30"]),
        ("*/15 * * * *", LORD_HOWE, "2026-10-03T15:10",
         ["2026-10-03T15:15", "2026-10-03T15:30", "2026-10-03T15:45"]),
        # hour wildcard never invents a time: local 02:00 does not exist on 2026-10-04
        ("0 * * * *", LORD_HOWE, "2026-10-03T14:00",
         ["2026-10-03T14:30", "2026-10-03T16:00", "2026-10-03T17:00"]),
        ("0 * * * *", LORD_HOWE, "2026-04-04T13:30",
         ["2026-04-04T14:00", "2026-04-04T15:30", "2026-04-04T16:30"]),
    ],
)
def test_fire_sequences(expression: str, zone: str, after: str, expected: list[str]) -> None:
    spec = parse(expression, zone)
    assert fire_times(spec, z(after), z(after), len(expected)) == zs(*expected)


# --- @every --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "anchor", "after", "expected"),
    [
        ("@every 1h", NY, "2026-11-01T03:00", "2026-11-01T04:30",
         ["2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00"]),
        ("@every 1d", NY, "2026-03-07T17:00", "2026-03-07T17:00",
         ["2026-03-08T17:00", "2026-03-09T17:00"]),
        ("@every 90m", LONDON, "2026-03-29T00:00", "2026-03-29T00:00",
         ["2026-03-29T01:30", "2026-03-29T03:00"]),
        ("@every 30m", LORD_HOWE, "2026-10-03T15:00", "2026-10-03T15:00",
         ["2026-10-03T15:30", "2026-10-03T16:00"]),
        ("@every 30s", "UTC", "2026-01-01T00:00:10", "2026-01-01T00:05:00",
         ["2026-01-01T00:05:10", "2026-01-01T00:05:40"]),
        ("@every 1h30m", "UTC", "2026-03-08T05:00", "2026-03-08T05:00",
         ["2026-03-08T06:30", "2026-03-08T08:00", "2026-03-08T09:30"]),
        # after before the anchor: first fire is anchor + interval
        ("@every 2h", "UTC", "2026-05-01T12:00", "2026-04-01T00:00",
         ["2026-05-01T14:00", "2026-05-01T16:00"]),
        # after exactly on a fire: strictly later
        ("@every 5m", "UTC", "2026-01-01T00:00", "2026-01-01T00:10", ["2026-01-01T00:15"]),
        ("@every 1d2h3m4s", "UTC", "2026-01-01T00:00", "2026-01-01T00:00",
         ["2026-01-02T02:03:04"]),
        ("@every 1s", "UTC", "2026-01-01T00:00:00.250000", "2026-01-01T00:00:05",
         ["2026-01-01T00:00:05.250000", "2026-01-01T00:00:06.250000"]),
    ],
)
def test_every(expression: str, zone: str, anchor: str, after: str, expected: list[str]) -> None:
    spec = parse(expression, zone)
    assert fire_times(spec, z(after), z(anchor), len(expected)) == zs(*expected)


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("@every 30s", 30),
        ("@every 5m", 300),
        ("@every 2h", 7200),
        ("@every 1h30m", 5400),
        ("@every 1h 30m", 5400),
        ("@EVERY 1H", 3600),
        ("@every 1d", 86400),
        ("@every 366d", 366 * 86400),
    ],
)
def test_every_durations(expression: str, seconds: int) -> None:
    assert parse(expression).every_seconds == seconds


# --- rejection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "cron expression is empty"),
        ("   ", "cron expression is empty"),
        ("* * * *", "needs 5 fields (minute hour day-of-month month day-of-week) or 6 with "
                    "seconds first, got 4"),
        ("* * * * * * *", "got 7"),
        ("60 * * * *", "cron field 'minute' value 60 out of range 0-59"),
        ("0 24 * * *", "cron field 'hour' value 24 out of range 0-23"),
        ("0 0 0 * *", "cron field 'day-of-month' value 0 out of range 1-31"),
        ("0 0 32 * *", "cron field 'day-of-month' value 32 out of range 1-31"),
        ("0 0 * 13 *", "cron field 'month' value 13 out of range 1-12"),
        ("0 0 * * 8", "cron field 'day-of-week' value 8 out of range 0-7"),
        ("60 0 0 * * *", "cron field 'second' value 60 out of range 0-59"),
        ("0 0 * FOO *", "cron field 'month' value 'FOO' is not a number 1-12 or a name JAN-DEC"),
        ("0 0 * * FUNDAY", "cron field 'day-of-week' value 'FUNDAY' is not a number 0-7"),
        ("MON * * * *", "cron field 'minute' value 'MON' is not a number 0-59"),
        ("0 0 ? * *", "cron field 'day-of-month' value '?' is not a number 1-31"),
        ("1.5 * * * *", "cron field 'minute' value '1.5' is not a number 0-59"),
        ("*/0 * * * *", "cron field 'minute' step '0' must be a whole number of at least 1"),
        ("0 */x * * *", "cron field 'hour' step 'x' must be a whole number of at least 1"),
        ("5-2 * * * *", "cron field 'minute' range 5-2 runs backwards"),
        ("0 0 * * FRI-MON", "cron field 'day-of-week' range FRI-MON runs backwards"),
        ("1,,2 * * * *", "cron field 'minute' has an empty list item in '1,,2'"),
        ("0 0 * * 1#6", "cron field 'day-of-week' value '1#6': the number after # must be 1-5"),
        ("0 0 30 2 *", "can never fire: day-of-month 30 does not occur in month 2"),
        ("0 0 31 FEB *", "can never fire: day-of-month 31 does not occur in month FEB"),
        ("0 0 31 4,6,9,11 *", "can never fire"),
        ("@fortnightly", "unknown macro '@fortnightly'"),
        ("@reboot", "unknown macro '@reboot'"),
        ("@every", "@every needs a duration like 30s, 5m or 1h30m"),
        ("@every 10x", "@every needs a duration like 30s, 5m or 1h30m"),
        ("@every -5m", "@every needs a duration like 30s, 5m or 1h30m"),
        ("@every 1.5h", "@every needs a duration like 30s, 5m or 1h30m"),
        ("@every 30m1h", "@every needs a duration like 30s, 5m or 1h30m"),
        ("@every 0s", "@every interval must be at least 1s"),
        ("@every 0h0m", "@every interval must be at least 1s"),
        ("@every 367d", "@every interval must be at most 366d"),
        ("@every 9000h", "@every interval must be at most 366d"),
    ],
)
def test_invalid_expressions(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(expression)
    assert message in str(caught.value)


@pytest.mark.parametrize("zone", ["Mars/Base", "", "Not A Zone", "../../etc/passwd", "/etc/hosts"])
def test_unknown_time_zone(zone: str) -> None:
    with pytest.raises(CronError) as caught:
        parse("* * * * *", zone)
    assert str(caught.value) == (
        f"unknown time zone '{zone}'; use an IANA name like 'Europe/London'"
    )


def test_rare_schedule_must_fire_within_five_years() -> None:
    # A fifth Monday in February needs a leap year whose 29th is a Monday: 2044 after 2016.
    with pytest.raises(CronError) as caught:
        parse("0 0 * 2 1#5", now=z("2026-01-01T00:00"))
    assert "does not fire within the next 5 years" in str(caught.value)
    spec = parse("0 0 * 2 1#5", now=z("2043-06-01T00:00"))
    assert next_fire(spec, z("2026-01-01T00:00"), z("2026-01-01T00:00")) == z("2044-02-29T00:00")


# --- API shape -----------------------------------------------------------------------------------


def test_spec_fields() -> None:
    every = parse("  @every 1h30m  ", LONDON)
    assert isinstance(every, CronSpec)
    assert (every.expression, every.timezone, every.every_seconds, every.cron) == (
        "@every 1h30m", LONDON, 5400, None)
    daily = parse(" 0 9 * * mon ", NY)
    assert (daily.expression, daily.every_seconds, daily.cron, daily.wall_clock) == (
        "0 9 * * mon", None, "0 9 * * mon", True)
    assert parse("@hourly").cron == "0 * * * *"
    assert parse("*/5 * * * *").wall_clock is False
    assert parse("0 9 * * *", NY) == parse("0 9 * * *", NY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        daily.expression = "x"  # type: ignore[misc]
    assert issubclass(CronError, ValueError)


def test_results_are_utc_and_strictly_after() -> None:
    spec = parse("*/15 * * * *")
    tokyo_after = datetime(2026, 1, 15, 19, 7, tzinfo=ZoneInfo("Asia/Tokyo"))  # 10:07 UTC
    fire = next_fire(spec, tokyo_after, tokyo_after)
    assert fire == z("2026-01-15T10:15")
    assert fire.tzinfo is UTC
    assert next_fire(spec, z("2026-01-15T10:14:59.999999"), THU) == z("2026-01-15T10:15")
    assert next_fire(spec, z("2026-01-15T10:15"), THU) == z("2026-01-15T10:30")
    assert next_fire(spec, z("2026-01-15T10:15:00.000001"), THU) == z("2026-01-15T10:30")


def test_naive_datetimes_are_rejected() -> None:
    spec = parse("* * * * *")
    with pytest.raises(ValueError, match="after must be a timezone-aware datetime"):
        next_fire(spec, datetime(2026, 1, 1), THU)
    with pytest.raises(ValueError, match="anchor must be a timezone-aware datetime"):
        next_fire(parse("@every 1m"), THU, datetime(2026, 1, 1))


def test_counts_and_limits() -> None:
    spec = parse("0 * * * *", NY)
    assert fire_times(spec, THU, THU, 0) == []
    with pytest.raises(ValueError):
        fire_times(spec, THU, THU, -1)
    with pytest.raises(ValueError):
        fire_times_between(spec, THU, THU, THU, -1)


@pytest.mark.parametrize(
    ("expression", "zone", "start", "end", "limit", "expected"),
    [
        ("0 * * * *", NY, "2026-11-01T04:00", "2026-11-01T08:00", 100,
         ["2026-11-01T05:00", "2026-11-01T06:00", "2026-11-01T07:00", "2026-11-01T08:00"]),
        ("0 * * * *", NY, "2026-11-01T04:00", "2026-11-01T08:00", 2,
         ["2026-11-01T05:00", "2026-11-01T06:00"]),
        ("0 * * * *", NY, "2026-11-01T04:00", "2026-11-01T04:59", 100, []),
        ("0 * * * *", NY, "2026-11-01T04:00", "2026-11-01T03:00", 100, []),
        ("30 2 * * *", NY, "2026-03-07T00:00", "2026-03-09T06:30", 100,
         ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"]),
        ("@every 20m", "UTC", "2026-01-01T00:00", "2026-01-01T01:00", 100,
         ["2026-01-01T00:20", "2026-01-01T00:40", "2026-01-01T01:00"]),
        ("@every 20m", "UTC", "2026-01-01T00:00", "2026-01-01T01:00", 0, []),
    ],
)
def test_fire_times_between(
    expression: str, zone: str, start: str, end: str, limit: int, expected: list[str]
) -> None:
    spec = parse(expression, zone)
    anchor = z("2026-01-01T00:00")
    assert fire_times_between(spec, z(start), z(end), anchor, limit) == zs(*expected)


# --- properties over whole years and every transition --------------------------------------------

TRANSITIONS = [
    (NY, "2026-03-08T00:00"),
    (NY, "2026-11-01T00:00"),
    (LONDON, "2026-03-29T00:00"),
    (LONDON, "2026-10-25T00:00"),
    (LORD_HOWE, "2026-04-04T00:00"),
    (LORD_HOWE, "2026-10-03T00:00"),
]


@pytest.mark.parametrize(
    ("expression", "zone"),
    [
        ("30 2 * * *", NY),
        ("30 1 * * *", NY),
        ("0 30 2 * * *", NY),
        ("30 1 * * *", LONDON),
        ("15 2 * * *", LORD_HOWE),
        ("45 1 * * *", LORD_HOWE),
    ],
)
def test_daily_wall_time_fires_once_per_local_day(expression: str, zone: str) -> None:
    spec = parse(expression, zone)
    start = z("2025-12-31T12:00")
    fires = fire_times(spec, start, start, 365)
    local_days = [f.astimezone(ZoneInfo(zone)).date() for f in fires]
    assert local_days == [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]


@pytest.mark.parametrize(("zone", "day"), TRANSITIONS)
@pytest.mark.parametrize(
    ("expression", "spacing", "count"),
    [("*/15 * * * *", timedelta(minutes=15), 192), ("@every 15m", timedelta(minutes=15), 192)],
)
def test_quarter_hours_keep_absolute_spacing(
    zone: str, day: str, expression: str, spacing: timedelta, count: int
) -> None:
    spec = parse(expression, zone)
    start = z(day)
    fires = fire_times_between(spec, start, start + timedelta(hours=48), start, 1000)
    assert len(fires) == count
    assert all(b - a == spacing for a, b in itertools.pairwise(fires))


@pytest.mark.parametrize(("zone", "day"), [t for t in TRANSITIONS if t[0] != LORD_HOWE])
def test_hourly_fires_every_real_hour(zone: str, day: str) -> None:
    spec = parse("0 * * * *", zone)
    start = z(day)
    fires = fire_times_between(spec, start, start + timedelta(hours=48), start, 1000)
    assert fires == [start + timedelta(hours=h) for h in range(1, 49)]


@pytest.mark.parametrize(("zone", "day"), TRANSITIONS)
@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/20 * * * * *",
        "0 * * * *",
        "0 */2 * * *",
        "* 1 * * *",
        "* 2 * * *",
        "*/7 1,2 * * *",
        "0 30 1 * * *",
        "30 1-3 * * *",
        "0 0 * * *",
        "@every 7m",
        "@every 1h",
    ],
)
def test_fire_times_strictly_increase_across_transitions(
    zone: str, day: str, expression: str
) -> None:
    spec = parse(expression, zone)
    start = z(day) - timedelta(days=1)
    end = start + timedelta(days=4)
    fires = fire_times_between(spec, start, end, start, 20_000)
    assert fires
    assert all(f.tzinfo is UTC for f in fires)
    assert fires[0] > start and fires[-1] <= end
    assert all(a < b for a, b in itertools.pairwise(fires))
    # Chaining next_fire gives the same answer as iterating.
    chained = [next_fire(spec, start, start)]
    for _ in range(min(len(fires), 50) - 1):
        chained.append(next_fire(spec, chained[-1], start))
    assert chained == fires[: len(chained)]
