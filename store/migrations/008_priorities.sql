-- Priorities: higher first, with aging so that no priority waits forever.

ALTER TABLE tasks
    ADD COLUMN priority integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100);
ALTER TABLE schedules
    ADD COLUMN priority integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100);

-- The claim takes due tasks in this order, lowest first: the instant the task fell due, moved
-- one minute earlier per point of priority. So among tasks due together the higher priority
-- goes first, and a task gains a point for every minute it waits: after 200 minutes a task of
-- priority -100 goes before any newly due one. Seconds-only intervals make it immutable, so
-- an index can hold it.
CREATE FUNCTION claim_rank(run_at timestamptz, priority integer) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT run_at - make_interval(secs => priority * 60) $$;

-- The claim scans exactly this: queued tasks in claim order (tasks_queued_run_at stays for
-- the earliest due time the dispatcher sleeps until).
CREATE INDEX tasks_queued_rank ON tasks (claim_rank(run_at, priority)) WHERE status = 'queued';
