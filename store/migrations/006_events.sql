-- The event stream behind GET /events: a row per change of a task, attempt, worker or cron
-- tick, written by statement-level triggers in the transaction that made the change (one
-- INSERT … SELECT per statement), so every scheduler replica reads the same stream.
--
-- Readers go in (xid, id) order and only up to the oldest transaction still in progress
-- (pg_snapshot_xmin): a transaction that commits late has an xid at or above that horizon,
-- so its events are read after it commits, never skipped.

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (kind IN ('task', 'attempt', 'worker', 'tick')),
    task_id     uuid,
    schedule_id uuid,
    worker_id   text,
    -- what changed, as the event's `data`
    data        jsonb NOT NULL
);
CREATE INDEX events_order ON events (xid, id);

-- A time in event data: RFC 3339 in UTC, whatever the writing session's time zone.
CREATE FUNCTION events_utc(at timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION events_of_new_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, task_id, schedule_id, worker_id, data)
    SELECT 'task', n.id, n.schedule_id, n.worker_id,
           jsonb_build_object('status', n.status, 'attempt', n.attempt,
                              'command', left(n.command, 200),
                              'scheduled_at', events_utc(n.scheduled_at))
    FROM new_rows n;
    RETURN NULL;
END $$;

-- Only changes of status or attempt are events: a task's other columns move with them.
CREATE FUNCTION events_of_changed_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, task_id, schedule_id, worker_id, data)
    SELECT 'task', n.id, n.schedule_id, n.worker_id,
           jsonb_build_object('status', n.status, 'attempt', n.attempt,
                              'exit_code', n.exit_code, 'reason', n.last_reason)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status OR n.attempt IS DISTINCT FROM o.attempt;
    RETURN NULL;
END $$;

CREATE FUNCTION events_of_new_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, task_id, schedule_id, worker_id, data)
    SELECT 'attempt', n.task_id, t.schedule_id, n.worker_id,
           jsonb_build_object('attempt', n.attempt, 'status', n.status)
    FROM new_rows n JOIN tasks t ON t.id = n.task_id;
    RETURN NULL;
END $$;

CREATE FUNCTION events_of_changed_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, task_id, schedule_id, worker_id, data)
    SELECT 'attempt', n.task_id, t.schedule_id, n.worker_id,
           jsonb_build_object('attempt', n.attempt, 'status', n.status, 'reason', n.reason,
                              'exit_code', n.exit_code)
    FROM new_rows n
    JOIN old_rows o ON o.task_id = n.task_id AND o.attempt = n.attempt
    JOIN tasks t ON t.id = n.task_id
    WHERE n.status IS DISTINCT FROM o.status;
    RETURN NULL;
END $$;

CREATE FUNCTION events_of_new_workers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, worker_id, data)
    SELECT 'worker', n.id,
           jsonb_build_object('address', n.address, 'slots', n.slots, 'draining', n.draining,
                              'lost', n.lost_at IS NOT NULL)
    FROM new_rows n;
    RETURN NULL;
END $$;

-- Heartbeats refresh every worker every second: only a change of what it is, is an event.
CREATE FUNCTION events_of_changed_workers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, worker_id, data)
    SELECT 'worker', n.id,
           jsonb_build_object('address', n.address, 'slots', n.slots, 'draining', n.draining,
                              'lost', n.lost_at IS NOT NULL)
    FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE (n.address, n.slots, n.draining, n.lost_at IS NULL)
          IS DISTINCT FROM (o.address, o.slots, o.draining, o.lost_at IS NULL);
    RETURN NULL;
END $$;

CREATE FUNCTION events_of_new_ticks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (kind, task_id, schedule_id, data)
    SELECT 'tick', n.task_id, n.schedule_id,
           jsonb_build_object('fire_time', events_utc(n.fire_time), 'outcome', n.outcome)
    FROM new_rows n;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_inserted_events AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION events_of_new_tasks();
CREATE TRIGGER tasks_updated_events AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_of_changed_tasks();
CREATE TRIGGER attempts_inserted_events AFTER INSERT ON attempts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_of_new_attempts();
CREATE TRIGGER attempts_updated_events AFTER UPDATE ON attempts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_of_changed_attempts();
CREATE TRIGGER workers_inserted_events AFTER INSERT ON workers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_of_new_workers();
CREATE TRIGGER workers_updated_events AFTER UPDATE ON workers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_of_changed_workers();
CREATE TRIGGER schedule_ticks_inserted_events AFTER INSERT ON schedule_ticks
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION events_of_new_ticks();
