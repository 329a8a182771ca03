"""The CLI's parsing of what people type: durations, instants, its configuration, and how API
errors read. Pure functions; tests/test_cli.py runs the CLI itself against a cluster."""

from __future__ import annotations

import httpx
import pytest

from skiplock_cli.client import error_message
from skiplock_cli.config import DEFAULT_URL, ConfigError, load
from skiplock_cli.durations import parse_duration, parse_instant


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("0.5", 0.5),
        ("5s", 5),
        ("2m", 120),
        ("1h30m", 5400),
        ("1h30m15s", 5415),
        ("1d2h", 93600),
        (" 1.5h ", 5400),
        ("10M", 600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "1h30", "30m1h", "1h 30m", "-5s", "5 minutes"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_instants_need_an_offset_and_are_normalised() -> None:
    assert parse_instant("2026-12-24T18:00:00+01:00") == "2026-12-24T18:00:00+01:00"
    assert parse_instant("2026-12-24 17:00Z") == "2026-12-24T17:00:00+00:00"
    with pytest.raises(ValueError, match="needs a UTC offset"):
        parse_instant("2026-12-24T18:00:00")
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        parse_instant("tomorrow")


def test_options_win_over_the_environment_which_wins_over_defaults() -> None:
    env = {"SKIPLOCK_URL": "http://env:1/", "SKIPLOCK_TOKEN": "from-env"}
    assert load(None, None, False, env={}).url == DEFAULT_URL
    assert load(None, None, False, env={}).token is None
    from_env = load(None, None, True, env=env)
    assert (from_env.url, from_env.token, from_env.json_output) == (
        "http://env:1",
        "from-env",
        True,
    )
    given = load("https://opt:2", "from-flag", False, env=env)
    assert (given.url, given.token) == ("https://opt:2", "from-flag")
    for bad in ("localhost:8081", "ftp://host", "http://"):
        with pytest.raises(ConfigError):
            load(bad, None, False, env={})


def test_error_messages_carry_the_apis_detail() -> None:
    def message(status: int, body: object) -> str:
        return error_message(httpx.Response(status, json=body))

    assert message(404, {"detail": "no task with id x"}) == "404: no task with id x"
    validation = {
        "detail": [
            {"loc": ["body", "cron"], "msg": "bad field", "type": "value_error"},
            {"loc": ["query", "limit"], "msg": "too big", "type": "less_than_equal"},
        ]
    }
    assert message(422, validation) == "422: cron: bad field; limit: too big"
    assert message(401, {"detail": "token required"}).endswith("SKIPLOCK_TOKEN)")
    page = "<html>\n  <body>bad gateway</body>\n</html>\n" + "x" * 500
    assert error_message(httpx.Response(502, text=page)) == ("502: " + " ".join(page.split())[:200])
