"""The capped copy of a command's output kept in the database: its first and last bytes.

Workers send what is new (worker_svc/output.py), coordinators merge it into one row per
attempt (store/outputs.py), and the scheduler serves it with a marker where bytes were left out
(scheduler_svc/routes/output.py).
"""

from __future__ import annotations

# Bytes kept at each end (head and tail) unless the worker or the task says otherwise.
DEFAULT_OUTPUT_CAP_BYTES = 64 * 1024
# Upper bound of a cap: a delta (at most one cap of head and one of tail) must fit a gRPC
# message with room to spare (4 MiB by default).
MAX_OUTPUT_CAP_BYTES = 1024 * 1024


def omission_marker(omitted: int) -> bytes:
    """The line that stands for the bytes between the head and the tail."""
    return f"\n[skiplock: {omitted} bytes omitted]\n".encode()
