#!/usr/bin/env python3
"""Raw process-spawn ceiling with no scheduler: how fast can this machine run `bash -c COMMAND`?

Runs the command COUNT times at CONCURRENCY three ways, each with stdout and stderr redirected to
a fresh file per command as a skiplock worker does:
  (a) subprocess.Popen from a ThreadPoolExecutor
  (b) asyncio.create_subprocess_exec bounded by a semaphore
  (c) subprocess.Popen on the event loop's thread, exits watched through pidfds (what the
      skiplock worker does)
The scheduler's throughput can be compared against these figures.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    count: int
    command: str
    concurrency: int
    json_path: Path | None


@dataclass(frozen=True)
class Result:
    seconds: float
    failures: int  # commands that exited non-zero

    def rate(self, count: int) -> float:
        return count / self.seconds if self.seconds > 0 else 0.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="spawn_baseline.py",
        description="Measure raw `bash -c COMMAND` spawn throughput with no scheduler.",
    )
    parser.add_argument("-n", dest="count", metavar="COUNT", type=_positive_int, default=1000,
                        help="commands to run per method (default: %(default)s)")
    parser.add_argument("-c", dest="command", metavar="COMMAND", default="echo hello",
                        help="shell command to run (default: %(default)r)")
    parser.add_argument("-p", dest="concurrency", metavar="CONCURRENCY", type=_positive_int,
                        default=8, help="commands running at once (default: %(default)s)")
    parser.add_argument("--json", dest="json_path", metavar="FILE", type=Path, default=None,
                        help="also write the figures as JSON to FILE")
    ns = parser.parse_args(argv)
    return Config(count=ns.count, command=ns.command, concurrency=ns.concurrency,
                  json_path=ns.json_path)


def _run_blocking(command: str, output: Path) -> int:
    with output.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", command], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
        return proc.wait()


def spawn_threads(config: Config, out_dir: Path) -> Result:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        codes = list(pool.map(lambda i: _run_blocking(config.command, out_dir / f"{i}.log"),
                              range(config.count)))
    return Result(seconds=time.perf_counter() - start, failures=sum(c != 0 for c in codes))


async def _run_async(command: str, output: Path, slots: asyncio.Semaphore) -> int:
    async with slots:
        with output.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", command, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT)
            return await proc.wait()


RunOne = Callable[[str, Path, asyncio.Semaphore], Awaitable[int]]


async def _spawn_all(config: Config, out_dir: Path, run_one: RunOne) -> list[int]:
    slots = asyncio.Semaphore(config.concurrency)
    return await asyncio.gather(*(run_one(config.command, out_dir / f"{i}.log", slots)
                                  for i in range(config.count)))


def spawn_asyncio(config: Config, out_dir: Path) -> Result:
    start = time.perf_counter()
    codes = asyncio.run(_spawn_all(config, out_dir, _run_async))
    return Result(seconds=time.perf_counter() - start, failures=sum(c != 0 for c in codes))


async def _run_pidfd(command: str, output: Path, slots: asyncio.Semaphore) -> int:
    async with slots:
        with output.open("wb") as out:
            proc = subprocess.Popen(["bash", "-c", command], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        fd = os.pidfd_open(proc.pid)
        loop.add_reader(fd, exited.set_result, None)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return proc.wait()


def spawn_pidfd(config: Config, out_dir: Path) -> Result:
    """Popen on one thread, exits watched through pidfds by the event loop (Linux)."""
    start = time.perf_counter()
    codes = asyncio.run(_spawn_all(config, out_dir, _run_pidfd))
    return Result(seconds=time.perf_counter() - start, failures=sum(c != 0 for c in codes))


METHODS = (("threads", spawn_threads), ("asyncio", spawn_asyncio), ("pidfd", spawn_pidfd))


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    results: dict[str, Result] = {}
    for name, method in METHODS:
        with tempfile.TemporaryDirectory(prefix="skiplock-spawn-") as out_dir:
            results[name] = method(config, Path(out_dir))
        print(f"Raw spawn ({name}): {results[name].rate(config.count):.1f} tasks/s")
    failures = sum(r.failures for r in results.values())
    if failures:
        print(f"warning: {failures} commands exited non-zero", file=sys.stderr)
    if config.json_path is not None:
        figures = {
            "count": config.count, "command": config.command,
            "concurrency": config.concurrency,
            **{f"{name}_tasks_per_s": r.rate(config.count) for name, r in results.items()},
            **{f"{name}_seconds": r.seconds for name, r in results.items()},
            "failures": failures,
        }
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
