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


class DatabaseBackends:
    """CPU of the PostgreSQL backends serving one database, found by pid in pg_stat_activity
    (the server may be shared with other work: only these processes count).

    Call `sample()` now and then while the load runs: a backend that appears later counts from
    zero, one that exits keeps what it had at its last sample (a pool that closes connections
    mid-run loses at most one interval of CPU). The server's own background processes (WAL
    writer, checkpointer, autovacuum) are not counted.
    """

    def __init__(self, admin_url: str, dbname: str) -> None:
        self.admin_url = admin_url
        self.dbname = dbname
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._started = False

    def _pids(self) -> list[int]:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.dbname,),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def sample(self) -> None:
        for pid in self._pids():
            used = process_cpu_seconds(pid)
            if pid not in self._last:
                self._start[pid] = used if not self._started else 0.0
            self._last[pid] = max(used, self._last.get(pid, 0.0))
        self._started = True

    def seconds(self) -> float:
        """CPU seconds the backends spent since the first sample."""
        return sum(self._last[pid] - self._start[pid] for pid in self._last)
