"""Values every service checks the same way, whichever edge a request comes in by."""

from __future__ import annotations

import re

# A command is 1 to this many bytes of UTF-8 (the DDL refuses longer ones too).
MAX_COMMAND_BYTES = 65536

# Bind-all hosts: fine to listen on, never an address to dial (a worker's advertised address).
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def is_wildcard_host(host: str) -> bool:
    """An empty host, or a bind-all address with or without IPv6 brackets."""
    return host.strip("[]") in WILDCARD_HOSTS or not host


# --- a task's execution settings (the API, the gRPC edge and the DDL agree on these) ----------

# Variables a task may add to its command's environment, and their sizes.
MAX_ENV_VARIABLES = 256
MAX_ENV_NAME_BYTES = 256
MAX_ENV_BYTES = 65536  # names and values together
# A POSIX shell variable name.
ENV_NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
# Names the worker sets itself (the attempt's identity) or keeps for its own settings.
RESERVED_ENV_PREFIX = "SKIPLOCK_"
MAX_CWD_BYTES = 4096
MAX_SUCCESS_EXIT_CODES = 256
# Hard rlimits a task may set on its command (the DDL checks the same bounds): below these
# minimums bash itself cannot start.
MEMORY_LIMIT_BOUNDS = (16 * 1024 * 1024, 1024**4)
CPU_LIMIT_BOUNDS = (1, 31 * 86400)
OPEN_FILES_LIMIT_BOUNDS = (16, 1048576)


def env_problem(env: dict[str, str] | object, field: str = "env") -> str:
    """What is wrong with a task's `env` ('' when nothing)."""
    if not isinstance(env, dict):
        return f"{field} must be an object of strings"
    if len(env) > MAX_ENV_VARIABLES:
        return f"{field} may hold at most {MAX_ENV_VARIABLES} variables"
    total = 0
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            return f"{field} must map names to strings"
        if not re.fullmatch(ENV_NAME_PATTERN, name) or len(name) > MAX_ENV_NAME_BYTES:
            return (
                f"{field}: {name[:64]!r} is not a variable name (letters, digits and _, "
                f"not starting with a digit, at most {MAX_ENV_NAME_BYTES} characters)"
            )
        if name.upper().startswith(RESERVED_ENV_PREFIX):
            return f"{field}: {name} is reserved: names starting with {RESERVED_ENV_PREFIX} are"
        if "\x00" in value:
            return f"{field}: the value of {name} must not contain NUL characters"
        total += len(name.encode()) + len(value.encode())
    if total > MAX_ENV_BYTES:
        return f"{field} is larger than {MAX_ENV_BYTES} bytes (names and values together)"
    return ""


def cwd_problem(cwd: str, field: str = "cwd") -> str:
    if not cwd.startswith("/"):
        return f"{field} must be an absolute path"
    if "\x00" in cwd:
        return f"{field} must not contain NUL characters"
    if len(cwd.encode()) > MAX_CWD_BYTES:
        return f"{field} is longer than {MAX_CWD_BYTES} bytes"
    return ""


def exit_codes_problem(codes: list[int], field: str = "success_exit_codes") -> str:
    if not 1 <= len(codes) <= MAX_SUCCESS_EXIT_CODES:
        return f"{field} must hold 1-{MAX_SUCCESS_EXIT_CODES} exit statuses"
    if not all(0 <= code <= 255 for code in codes):
        return f"{field} must hold exit statuses between 0 and 255"
    return ""
