"""The `--ready-file` handshake between a service and whoever started it.

A service given `--ready-file PATH` writes one JSON object there once it accepts connections:
`{"host": "127.0.0.1", "port": 41237, "pid": 1234}`, the address it really bound. Whoever starts
it (`make run`, the tests, the benchmarks) can then ask for port 0 and read the port the system
chose, instead of guessing a free port and hoping nothing takes it before the service binds.
The file appears whole (written aside, then renamed) or not at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ready:
    host: str
    port: int
    pid: int


def write_ready_file(
    path: Path | None, host: str, port: int, metrics_port: int | None = None
) -> None:
    """Announce the bound address (and the metrics port, when serving metrics); nothing to do
    without a path."""
    if path is None:
        return
    announced: dict[str, object] = {"host": host, "port": port, "pid": os.getpid()}
    if metrics_port is not None:
        announced["metrics_port"] = metrics_port
    body = json.dumps(announced)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside.write_text(body + "\n")
    os.replace(aside, path)


def read_ready_file(path: Path) -> Ready | None:
    """What a service announced, or None while it has not (yet)."""
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Ready(str(found["host"]), int(found["port"]), int(found["pid"]))
