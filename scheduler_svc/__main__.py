"""`python -m scheduler_svc --scheduler_port=:8081`"""

from __future__ import annotations

import signal
import sys

import uvicorn

from common.config import ConfigError
from common.loops import setup_logging
from scheduler_svc.app import create_app
from scheduler_svc.config import load


def main() -> None:
    setup_logging("scheduler")
    try:
        config = load()
    except ConfigError as exc:
        sys.exit(f"scheduler: {exc}")
    # After a graceful shutdown uvicorn restores the previous handlers and raises the signal
    # again; with these no-ops underneath, SIGTERM and Ctrl-C end the process with exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.run(
        create_app(config),
        host=config.listen.bind_host,
        port=config.listen.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
