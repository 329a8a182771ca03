"""`python -m worker_svc --worker_port=:8000 --coordinator=localhost:8080`"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvloop

from common import logs
from common.config import ConfigError
from common.loops import install_stop_signals
from worker_svc.config import load
from worker_svc.reaper import become_subreaper
from worker_svc.service import serve


async def main() -> None:
    try:
        config = load()
    except ConfigError as exc:
        sys.exit(f"worker: {exc}")
    logs.configure("worker", config.log)
    # Orphaned descendants of commands become this process's children, so they can be found
    # and killed when their attempt ends (worker_svc/reaper.py).
    if not become_subreaper():
        logging.getLogger(__name__).warning(
            "not a child subreaper: a command's children that leave its session and "
            "lose their parent cannot be found when the attempt ends"
        )
    stop = asyncio.Event()
    install_stop_signals(stop)
    await serve(config, stop)


def run() -> None:
    """The `skiplock-worker` command."""
    # uvloop: the gRPC and database round trips cost about a fifth less CPU than on asyncio's
    # default loop.
    uvloop.run(main())


if __name__ == "__main__":
    run()
