"""The CLI's configuration, built once from its global options and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

DEFAULT_URL = "http://127.0.0.1:8081"


class ConfigError(ValueError):
    """A global option or environment variable has a value the CLI cannot use."""


@dataclass(frozen=True)
class CliConfig:
    url: str  # the scheduler's base URL, without a trailing slash
    token: str | None  # sent as `Authorization: Bearer …` when set
    json_output: bool  # print the API's JSON instead of tables


def load(
    url: str | None,
    token: str | None,
    json_output: bool,
    env: Mapping[str, str] | None = None,
) -> CliConfig:
    """Options win over SKIPLOCK_URL and SKIPLOCK_TOKEN, which win over the defaults."""
    env = os.environ if env is None else env
    base = (url or env.get("SKIPLOCK_URL", "").strip() or DEFAULT_URL).rstrip("/")
    try:
        parsed = httpx.URL(base)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"--url {base!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"--url {base!r}: expected http://HOST:PORT or https://HOST:PORT")
    secret = token or env.get("SKIPLOCK_TOKEN", "").strip() or None
    return CliConfig(url=base, token=secret, json_output=json_output)
