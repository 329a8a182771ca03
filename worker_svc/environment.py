"""What a command's environment holds: a minimal base, the worker's --pass-env allow-list, the
task's own `env`, and the attempt's identity. Never the worker's own settings: the cluster
token, TLS files, database settings or anything else it was started with."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from common.config import ConfigError

# A POSIX shell variable name.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The worker's own configuration and credentials, and what libpq would read as a password or
# connection: --pass-env refuses to forward them.
SECRET_PREFIXES = ("SKIPLOCK_", "POSTGRES_", "DATABASE_URL", "PG")
# Used when the worker itself has no such variable.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_LANG = "C.UTF-8"
# Set per attempt by the worker, for the command's own use; a task may not set them.
TASK_ID_VARIABLE = "SKIPLOCK_TASK_ID"
ATTEMPT_VARIABLE = "SKIPLOCK_ATTEMPT"
WORKER_ID_VARIABLE = "SKIPLOCK_WORKER_ID"


def is_secret_name(name: str) -> bool:
    return name.upper().startswith(SECRET_PREFIXES)


def parse_pass_env(value: str) -> tuple[str, ...]:
    """'NAME,NAME' -> names, each a shell variable name and none of the worker's secrets."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    for name in names:
        if not ENV_NAME.fullmatch(name):
            raise ConfigError(f"--pass-env: {name!r} is not an environment variable name")
        if is_secret_name(name):
            raise ConfigError(
                f"--pass-env: refusing to pass {name} to commands: names starting with "
                f"{', '.join(SECRET_PREFIXES)} are the cluster's own settings and secrets"
            )
    return names


def base_environment(
    worker_env: Mapping[str, str], pass_env: Iterable[str]
) -> tuple[tuple[str, str], ...]:
    """What every command starts from: PATH and HOME (the worker's, or defaults), its locale
    (LANG=C.UTF-8 unless it has one), TZ=UTC, then the --pass-env variables the worker has."""
    base = {
        "PATH": worker_env.get("PATH") or DEFAULT_PATH,
        "HOME": worker_env.get("HOME") or "/",
        "LANG": worker_env.get("LANG") or DEFAULT_LANG,
        "TZ": "UTC",
    }
    if worker_env.get("LC_ALL"):
        base["LC_ALL"] = worker_env["LC_ALL"]
    base |= {name: worker_env[name] for name in pass_env if name in worker_env}
    return tuple(base.items())


def command_environment(
    base: Iterable[tuple[str, str]],
    task_env: Mapping[str, str],
    task_id: str,
    attempt: int,
    worker_id: str,
) -> dict[str, str]:
    """The base, then the task's own variables, then the attempt's identity (which wins): its
    task, its number and the worker running it (all three also recorded in the database)."""
    env = dict(base)
    env.update(task_env)
    env[TASK_ID_VARIABLE] = task_id
    env[ATTEMPT_VARIABLE] = str(attempt)
    env[WORKER_ID_VARIABLE] = worker_id
    return env
