"""The coordinator's Prometheus metrics (served with --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds; start delays are mostly milliseconds, run durations anything up to hours.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)

CLAIMS = Counter("skiplock_claims", "Claim statements run by the dispatch loop")
CLAIMED = Counter("skiplock_claimed_attempts", "Attempts opened by claims (one per due task)")
HANDOVERS = Counter(
    "skiplock_handovers",
    "Attempts handed over to workers, by result: accepted, refused, unreachable, no_answer "
    "(left to reconciliation) or protocol_error",
    ["result"],
)
ATTEMPTS_ENDED = Counter(
    "skiplock_attempts_ended",
    "Attempts ended, by status (succeeded, failed, cancelled) and reason (none for success)",
    ["status", "reason"],
)
START_DELAY = Histogram(
    "skiplock_attempt_start_delay_seconds",
    "From when an attempt was due (its run_at) to when its command started on a worker",
    buckets=DELAY_BUCKETS,
)
RUN_DURATION = Histogram(
    "skiplock_attempt_run_duration_seconds",
    "From an attempt's start to its end, for attempts that started",
    buckets=DURATION_BUCKETS,
)
WORKERS_LOST = Counter(
    "skiplock_workers_lost", "Workers this coordinator declared lost (silent for too long)"
)
TICKS = Counter("skiplock_cron_ticks", "Cron ticks decided, by outcome", ["outcome"])
TICK_LAG = Histogram(
    "skiplock_cron_tick_lag_seconds",
    "From a cron tick's fire time to the pass that decided it",
    buckets=DELAY_BUCKETS,
)
PRUNED = Counter("skiplock_retention_deleted", "Rows retention deleted, by table", ["table"])
