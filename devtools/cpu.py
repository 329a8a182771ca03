"""CPU accounting for the benchmark scripts, read from /proc: per service process, all postgres
processes of the machine, and the machine as a whole."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.cluster import ServiceProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of one process so far, or with `children` of the children it
    has waited for (for a worker: the commands it ran); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / CLOCK_TICKS


def postgres_cpu_seconds() -> float:
    """CPU seconds of every postgres process on the machine (the server is shared)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += process_cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


@dataclass
class CpuSample:
    wall: float
    services: dict[str, float]
    postgres: float
    machine: tuple[float, float]


def cpu_sample(services: dict[str, ServiceProcess]) -> CpuSample:
    used = {name: process_cpu_seconds(p.pid) for name, p in services.items()}
    workers = [p for name, p in services.items() if name.startswith("worker")]
    if workers:
        used["commands run"] = sum(process_cpu_seconds(p.pid, children=True) for p in workers)
    used["this script"] = process_cpu_seconds(os.getpid())
    return CpuSample(time.monotonic(), used, postgres_cpu_seconds(), machine_busy_seconds())
