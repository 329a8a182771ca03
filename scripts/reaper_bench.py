#!/usr/bin/env python3
"""The worker's own CPU per command with and without the reaper's shortcut (worker_svc/reaper.py).

Runs COUNT `bash -c COMMAND` through ProcessRunner at CONCURRENCY (started at RATE a second, or
all at once) in this process, made a child subreaper as the worker is, in ROUNDS alternating
between the shortcut (a /proc scan only when the worker holds a child no running command leads)
and the full scan after every ending. Prints this process's own CPU per command (its children's
not counted: that is the command's) for each round, the medians and their ratio.
"""

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker_svc.process import Execution, ProcessRunner
from worker_svc.reaper import Reaper, become_subreaper


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_round(
    count: int, concurrency: int, command: str, rate: float, shortcut: bool
) -> float:
    """CPU seconds of this process per command for one round."""
    reaper = Reaper()
    reaper.chains_end_here = reaper.chains_end_here and shortcut
    runner = ProcessRunner(5.0, reaper)
    gate = asyncio.Semaphore(concurrency)
    with tempfile.TemporaryDirectory() as directory:

        async def one(index: int) -> None:
            if rate > 0:  # started at a steady pace, as a worker under a steady load
                await asyncio.sleep(index / rate)
            async with gate:
                work = Execution(
                    task_id="00000000-0000-0000-0000-000000000001",
                    attempt=index,
                    command=command,
                    timeout=None,
                    output_path=Path(directory) / f"{index}.out",
                    not_before=None,
                )
                await runner.run(work, lambda: None)

        before = own_cpu()
        await asyncio.gather(*(one(i) for i in range(count)))
        reaper.flush()
        return (own_cpu() - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=400)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("-r", "--rounds", type=int, default=3, help="rounds of each mode")
    parser.add_argument("--command", default="true")
    parser.add_argument("--rate", type=float, default=0, help="commands/s; 0: all at once")
    parser.add_argument(
        "--only", choices=("full", "shortcut"), help="one mode alone (to time from outside)"
    )
    args = parser.parse_args()
    if not become_subreaper():
        sys.exit("not a child subreaper: the shortcut does not apply here")
    figures: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for shortcut in (False, True):
            if args.only is not None and shortcut != (args.only == "shortcut"):
                continue
            cost = asyncio.run(
                one_round(args.count, args.concurrency, args.command, args.rate, shortcut)
            )
            figures[shortcut].append(cost)
            mode = "shortcut " if shortcut else "full scan"
            print(f"{mode}: {cost * 1000:.3f} ms CPU per command", flush=True)
    if args.only is not None:
        return
    full, short = (statistics.median(figures[mode]) for mode in (False, True))
    print(
        f"median full scan {full * 1000:.3f} ms, shortcut {short * 1000:.3f} ms, "
        f"shortcut / full scan {short / full:.2f}"
    )


if __name__ == "__main__":
    main()
