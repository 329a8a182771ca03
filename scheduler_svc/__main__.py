"""`python -m scheduler_svc --scheduler_port=:8081`"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import uvicorn

from common import heap, logs
from common.config import ConfigError
from common.ready import write_ready_file
from scheduler_svc import edge
from scheduler_svc.app import create_app
from scheduler_svc.config import load


class Server(uvicorn.Server):
    """uvicorn's server, announcing the address it bound in the --ready-file."""

    def __init__(self, config: uvicorn.Config, ready_file: Path | None) -> None:
        super().__init__(config)
        self.ready_file = ready_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # What start-up built (the app, its models, the pool) lives as long as the process:
            # kept out of the collector's passes, which the garbage of every request sets off.
            heap.settle()
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            write_ready_file(self.ready_file, host, port)


def main() -> None:
    try:
        config = load()
    except ConfigError as exc:
        sys.exit(f"scheduler: {exc}")
    logs.configure("scheduler", config.log)
    # After a graceful shutdown uvicorn restores the previous handlers and raises the signal
    # again; with these no-ops underneath, SIGTERM and Ctrl-C end the process with exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    server_config = uvicorn.Config(
        create_app(config),
        host=config.listen.bind_host,
        port=config.listen.port,
        log_level="warning",
        log_config=None,  # uvicorn's loggers go through common/logs.py like every other
        access_log=False,
        timeout_graceful_shutdown=10,
        ssl_certfile=config.tls_cert,
        ssl_keyfile=config.tls_key,
        **edge.uvicorn_settings(config.edge),
    )
    Server(server_config, config.ready_file).run()


if __name__ == "__main__":
    main()
