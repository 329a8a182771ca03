"""Values every service checks the same way, whichever edge a request comes in by."""

from __future__ import annotations

# A command is 1 to this many bytes of UTF-8 (the DDL refuses longer ones too).
MAX_COMMAND_BYTES = 65536

# Bind-all hosts: fine to listen on, never an address to dial (a worker's advertised address).
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def is_wildcard_host(host: str) -> bool:
    """An empty host, or a bind-all address with or without IPv6 brackets."""
    return host.strip("[]") in WILDCARD_HOSTS or not host
