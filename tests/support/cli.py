"""Running the `skiplock` CLI as a subprocess, as a user or a script would."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from devtools.cluster import REPO_ROOT, service_env

FROM_CHECKOUT = (sys.executable, "-m", "skiplock_cli")


def run_cli(
    *args: str,
    url: str | None = None,
    env: Mapping[str, str | None] | None = None,
    command: Sequence[str] = FROM_CHECKOUT,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """`skiplock [--url URL] ARGS…` with SKIPLOCK_* scrubbed from the environment unless `env`
    sets them, and a wide terminal so tables are not wrapped."""
    argv = [*command, *(["--url", url] if url else []), *args]
    return subprocess.run(
        argv,
        cwd=REPO_ROOT,
        env=service_env({"COLUMNS": "200", **(env or {})}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"
    )


def cli_json(*args: str, url: str, **kwargs: Any) -> Any:
    """Run with --json, require exit 0, and return the parsed document."""
    result = run_cli("--json", *args, url=url, **kwargs)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)
