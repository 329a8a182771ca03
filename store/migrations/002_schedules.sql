-- Cron schedules, the ledger of their ticks, and the tasks that ticks start.

CREATE TABLE schedules (
    id                     uuid PRIMARY KEY,
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    cron                   text NOT NULL CHECK (length(cron) BETWEEN 1 AND 200),
    timezone               text NOT NULL CHECK (length(timezone) BETWEEN 1 AND 64),
    command                text NOT NULL CHECK (octet_length(command) BETWEEN 1 AND 65536),
    overlap                text NOT NULL DEFAULT 'skip'
                           CHECK (overlap IN ('allow', 'skip', 'cancel_previous')),
    -- a tick noticed later than this after its fire time is recorded as missed, not run
    catchup_window_seconds integer NOT NULL DEFAULT 60
                           CHECK (catchup_window_seconds BETWEEN 1 AND 31622400),
    timeout_seconds        double precision
                           CHECK (timeout_seconds > 0 AND timeout_seconds <= 2678400),
    max_retries            integer NOT NULL DEFAULT 0 CHECK (max_retries BETWEEN 0 AND 100),
    retry_backoff_seconds  double precision NOT NULL DEFAULT 1
                           CHECK (retry_backoff_seconds BETWEEN 0 AND 86400),
    paused                 boolean NOT NULL DEFAULT false,
    -- each run starts up to this many seconds after its fire time, never before it
    jitter_seconds         double precision NOT NULL DEFAULT 0
                           CHECK (jitter_seconds BETWEEN 0 AND 86400),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    -- @every intervals count from here: creation, or the last change of the expression
    anchor_at              timestamptz NOT NULL,
    -- ticks before this instant never run: creation, or the last resume
    active_from            timestamptz NOT NULL,
    -- the earliest fire time not yet in the ledger; the cron loop claims schedules by it
    next_fire_at           timestamptz NOT NULL,
    -- deleted schedules keep their ledger but never fire again and free their name
    deleted_at             timestamptz,
    CHECK (updated_at >= created_at),
    CHECK (anchor_at >= created_at AND active_from >= created_at),
    CHECK (next_fire_at > anchor_at),
    CHECK (deleted_at IS NULL OR deleted_at >= created_at)
);

-- Names are unique among live schedules; the index also serves listing in name order.
CREATE UNIQUE INDEX schedules_live_name ON schedules (name) WHERE deleted_at IS NULL;
-- The cron loop claims live schedules in fire order and sleeps until the earliest one.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE deleted_at IS NULL;

ALTER TABLE tasks
    ADD COLUMN schedule_id uuid REFERENCES schedules (id),
    -- the tick that started this task; NULL for one-off tasks and manual triggers
    ADD COLUMN fire_time timestamptz,
    -- a run of a schedule whose overlap policy forbids a second active run
    ADD COLUMN exclusive_run boolean NOT NULL DEFAULT false,
    ADD CHECK (fire_time IS NULL OR (schedule_id IS NOT NULL AND scheduled_at = fire_time)),
    ADD CHECK (NOT exclusive_run OR schedule_id IS NOT NULL);

-- At most one task per tick.
CREATE UNIQUE INDEX tasks_one_per_tick ON tasks (schedule_id, fire_time)
    WHERE fire_time IS NOT NULL;
-- Overlap checks look for the unfinished runs of a schedule.
CREATE INDEX tasks_schedule_unfinished ON tasks (schedule_id)
    WHERE schedule_id IS NOT NULL AND status IN ('queued', 'dispatched', 'running');
-- skip and cancel_previous: never two unfinished runs of one schedule at once.
CREATE UNIQUE INDEX tasks_one_exclusive_run ON tasks (schedule_id)
    WHERE exclusive_run AND status IN ('queued', 'dispatched', 'running');

CREATE TABLE schedule_ticks (
    schedule_id uuid NOT NULL REFERENCES schedules (id),
    fire_time   timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('started', 'skipped_overlap', 'skipped_paused',
                                                 'missed', 'cancelled_previous')),
    -- the run this tick started (cancelled_previous: the new run, after cancelling the old)
    task_id     uuid REFERENCES tasks (id),
    -- when a coordinator decided the outcome
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (schedule_id, fire_time),
    CHECK ((outcome IN ('started', 'cancelled_previous')) = (task_id IS NOT NULL)),
    CHECK (recorded_at >= fire_time)
);
