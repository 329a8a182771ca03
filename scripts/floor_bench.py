#!/usr/bin/env python3
"""The floor of skiplock's stack on this machine: what the steps every task needs cost with
nothing of skiplock's own around them (docs/PERFORMANCE.md, "The floor of the stack").
Prints figures, one line per round; run it beside `make bench` to tell skiplock's own cost
from the stack's.

  http    a bare ASGI app on uvicorn with httptools and uvloop (the scheduler's server and
          loop) answering a JSON POST with a JSON body, driven at RATE requests/s by a
          client in another process: the server's CPU ms per request
  spawn   `bash -c COMMAND` started as a worker starts it (subprocess.Popen, new session,
          output to a file) and waited for: this process's CPU µs per command, the
          command's own CPU not counted
  commit  one single-row insert per transaction on PostgreSQL, with synchronous_commit on
          and off: the backend's CPU µs per transaction (the difference is the WAL flush)

What one gRPC message on a stream costs is `scripts/grpc_stream_bench.py`'s; what a task's
three statements cost a backend is `scripts/statement_cost_bench.py`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.cpu import process_cpu_seconds

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
BODY = b'{"task_id": "00000000-0000-0000-0000-000000000000", "status": "queued"}'


async def bare_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Reads the whole body and answers 201 with a small JSON document."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


def serve_http(sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(bare_app, loop="uvloop", http="httptools", lifespan="off",
                            log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


async def drive_http(port: int, server_pid: int, rate: float, count: int) -> float:
    import httpx

    url = f"http://127.0.0.1:{port}/schedule"
    async with httpx.AsyncClient() as client:
        for _ in range(50):  # the server is up once it answers
            try:
                await client.post(url, json={"command": "echo hello"})
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        before, start = process_cpu_seconds(server_pid), time.monotonic()
        for i in range(count):
            await client.post(url, json={"command": "echo hello"})
            await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
        return (process_cpu_seconds(server_pid) - before) / count


def bench_http(rate: float, count: int, rounds: int) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # the server's port, bound here so that no other can take it
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(target=serve_http, args=(sock,))
    server.start()
    try:
        assert server.pid is not None
        for _ in range(rounds):
            ms = asyncio.run(drive_http(port, server.pid, rate, count)) * 1e3
            print(f"http: bare uvicorn server CPU {ms:.3f} ms per request at {rate:g}/s")
    finally:
        server.terminate()
        server.join()


def bench_spawn(command: str, count: int, rounds: int) -> None:
    bash = shutil.which("bash")
    with tempfile.TemporaryDirectory(prefix="skiplock-floor-") as out_dir:
        output = Path(out_dir) / "out"
        for _ in range(rounds):
            before = time.process_time()
            for _ in range(count):
                with output.open("wb") as out:
                    subprocess.Popen(["bash", "-c", command], executable=bash, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, close_fds=True).wait()
            us = (time.process_time() - before) / count * 1e6
            print(f"spawn: Popen and wait, this process's CPU {us:.0f} µs per command")


def bench_commit(count: int, rounds: int) -> None:
    import psycopg

    from devtools import databases

    server = databases.discover_server()
    with databases.throwaway_database(server.admin_url, "skiplock_floor_") as url, \
            psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE floor (id bigserial PRIMARY KEY, v text)")
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(row[0])
        for _ in range(rounds):
            for mode in ("on", "off"):
                conn.execute(f"SET synchronous_commit = {mode}")
                before = process_cpu_seconds(pid)
                for _ in range(count):
                    conn.execute("INSERT INTO floor (v) VALUES (%s)", ("x",))
                us = (process_cpu_seconds(pid) - before) / count * 1e6
                print(f"commit: backend CPU {us:.0f} µs per insert, synchronous_commit {mode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="*", default=["http", "spawn", "commit"])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("-n", "--count", type=int, default=1000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--command", default="echo hello")
    args = parser.parse_args()
    unknown = set(args.parts) - {"http", "spawn", "commit"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"load average {os.getloadavg()[0]:.2f}, {now}")
    if "http" in args.parts:
        bench_http(args.rate, args.count, args.rounds)
    if "spawn" in args.parts:
        bench_spawn(args.command, args.count, args.rounds)
    if "commit" in args.parts:
        bench_commit(args.count * 2, args.rounds)


if __name__ == "__main__":
    main()
