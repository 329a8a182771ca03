-- Workers, tasks and the attempts that run them.

CREATE TABLE workers (
    id                text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    -- host:port that coordinators dial; never a wildcard address
    address           text NOT NULL CHECK (length(address) BETWEEN 3 AND 300 AND address NOT LIKE '0.0.0.0:%'),
    slots             integer NOT NULL CHECK (slots BETWEEN 0 AND 10000),
    -- attempts handed to this worker and not yet ended; dispatch locks the row and reads it
    open_attempts     integer NOT NULL DEFAULT 0 CHECK (open_attempts >= 0),
    draining          boolean NOT NULL DEFAULT false,
    first_seen_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL,
    -- set when the worker was declared lost; cleared when it heartbeats again
    lost_at           timestamptz,
    CHECK (lost_at IS NULL OR lost_at >= last_heartbeat_at)
);

CREATE TABLE tasks (
    id                    uuid PRIMARY KEY,
    command               text NOT NULL CHECK (octet_length(command) BETWEEN 1 AND 65536),
    status                text NOT NULL DEFAULT 'queued'
                          CHECK (status IN ('queued', 'dispatched', 'running',
                                            'succeeded', 'failed', 'cancelled')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- the start the user asked for; never changes
    scheduled_at          timestamptz NOT NULL,
    -- earliest start of the next attempt: scheduled_at, or later for a retry
    run_at                timestamptz NOT NULL,
    -- number of the latest attempt (0 before the first dispatch); reports are fenced on it
    attempt               integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- attempts that ended in a failure that consumes a retry
    failures              integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    max_retries           integer NOT NULL DEFAULT 0 CHECK (max_retries BETWEEN 0 AND 100),
    retry_backoff_seconds double precision NOT NULL DEFAULT 1
                          CHECK (retry_backoff_seconds BETWEEN 0 AND 86400),
    timeout_seconds       double precision CHECK (timeout_seconds > 0 AND timeout_seconds <= 2678400),
    -- the latest attempt, mirrored here for /status
    worker_id             text,
    picked_at             timestamptz,
    started_at            timestamptz,
    exit_code             integer,
    output_path           text,
    completed_at          timestamptz,
    failed_at             timestamptz,
    cancelled_at          timestamptz,
    last_reason           text,
    idempotency_key       text UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    request_hash          text,
    CHECK ((idempotency_key IS NULL) = (request_hash IS NULL)),
    CHECK (run_at >= scheduled_at),
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (completed_at IS NOT NULL)),
    CHECK ((status = 'failed') = (failed_at IS NOT NULL)),
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL)),
    CHECK (status NOT IN ('dispatched', 'running') OR (worker_id IS NOT NULL AND picked_at IS NOT NULL)),
    CHECK (status <> 'running' OR started_at IS NOT NULL),
    CHECK (picked_at IS NULL OR picked_at >= run_at)
);

-- The claim scans exactly this: queued tasks in due order.
CREATE INDEX tasks_queued_run_at ON tasks (run_at) WHERE status = 'queued';
-- Cancellation and cleanup look for tasks whose attempt may still be alive.
CREATE INDEX tasks_active ON tasks (id) WHERE status IN ('dispatched', 'running');

CREATE TABLE attempts (
    task_id          uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt          integer NOT NULL CHECK (attempt >= 1),
    worker_id        text NOT NULL REFERENCES workers (id),
    status           text NOT NULL
                     CHECK (status IN ('dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
    -- why a failed or cancelled attempt ended
    reason           text CHECK (reason IN ('exit_code', 'timeout', 'worker_lost', 'worker_shutdown',
                                            'spawn_failed', 'worker_refused', 'worker_unreachable',
                                            'dispatch_lost', 'cancelled')),
    picked_at        timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    exit_code        integer,
    output_path      text,
    detail           text CHECK (length(detail) <= 2000),
    -- set when the task was cancelled while this attempt was alive; the worker is told to stop it
    cancel_requested_at timestamptz,
    cancel_sent_at   timestamptz,
    PRIMARY KEY (task_id, attempt),
    CHECK ((status IN ('dispatched', 'running')) = (ended_at IS NULL)),
    CHECK (status <> 'running' OR started_at IS NOT NULL),
    CHECK ((status IN ('failed', 'cancelled')) = (reason IS NOT NULL)),
    CHECK (ended_at IS NULL OR ended_at >= picked_at)
);

-- Slot accounting and lost-worker recovery look at the open attempts of a worker.
CREATE INDEX attempts_open_by_worker ON attempts (worker_id) WHERE ended_at IS NULL;
-- Cancellation delivery looks for open attempts whose task was cancelled.
CREATE INDEX attempts_cancel_pending ON attempts (task_id)
    WHERE ended_at IS NULL AND cancel_requested_at IS NOT NULL;
