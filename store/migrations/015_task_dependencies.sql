-- Task dependencies: a task created with `after` waits (status 'waiting', outside the claim's
-- partial indexes) until every task it names has succeeded; when one of them fails or is
-- cancelled it ends failed with reason 'dependency_failed', and so do the tasks that wait on
-- it, transitively. Edges are fixed at creation and may only name tasks that exist then (or
-- siblings of one batch, checked for cycles before anything is written), so no cycle can form.

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('waiting', 'queued', 'dispatched', 'running',
                      'succeeded', 'failed', 'cancelled'));
-- Tasks in `after` that have not succeeded yet; a waiting task has at least one.
ALTER TABLE tasks
    ADD COLUMN unmet_dependencies integer NOT NULL DEFAULT 0 CHECK (unmet_dependencies >= 0),
    ADD CHECK (status <> 'waiting' OR unmet_dependencies > 0);

-- tasks.last_reason takes the same words; a task ended for its dependencies has no attempt.
ALTER TABLE attempts DROP CONSTRAINT attempts_reason_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_reason_check
    CHECK (reason IN ('exit_code', 'timeout', 'worker_lost', 'worker_shutdown', 'spawn_failed',
                      'worker_refused', 'worker_unreachable', 'dispatch_lost', 'cancelled',
                      'dependency_failed'));

CREATE TABLE task_dependencies (
    task_id    uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (task_id, depends_on),
    CHECK (task_id <> depends_on)
);
-- Ending a task looks up the tasks that wait on it.
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on);

-- The one place dependents move, whatever ended the task (an attempt's outcome, the cancel
-- API, recovery of a lost worker, a schedule's overlap policy): after any UPDATE of tasks,
-- tasks that became succeeded release their waiting dependents (queued once none is unmet,
-- never before their run_at), and tasks that became failed or cancelled end every waiting task
-- that depends on them, directly or through other waiting tasks, in one recursive statement
-- (so a chain of any length ends at once, without a trigger call per level).
--
-- Concurrency: `unmet_dependencies - n` is re-read from the newest row version when two
-- endings update the same dependent, so none is lost; each statement here takes a fresh
-- snapshot, so it sees the edges of a task inserted while the ended task was locked
-- (store/dependencies.py locks the tasks it names FOR SHARE before counting them).
CREATE FUNCTION tasks_release_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queued integer;
BEGIN
    -- Most statements end no task another waits on: leave at once.
    IF NOT EXISTS (
        SELECT 1 FROM new_rows n JOIN task_dependencies d ON d.depends_on = n.id
        WHERE n.status IN ('succeeded', 'failed', 'cancelled')
    ) THEN
        RETURN NULL;
    END IF;

    WITH met AS (
        SELECT d.task_id, count(*)::int AS n
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        JOIN task_dependencies d ON d.depends_on = n.id
        WHERE n.status = 'succeeded' AND o.status <> 'succeeded'
        GROUP BY d.task_id
    ), released AS (
        UPDATE tasks t
        SET unmet_dependencies = t.unmet_dependencies - met.n,
            status = CASE WHEN t.unmet_dependencies = met.n THEN 'queued' ELSE 'waiting' END,
            -- it falls due when it is released: waiting earns no priority aging
            run_at = CASE WHEN t.unmet_dependencies = met.n THEN greatest(t.run_at, now())
                          ELSE t.run_at END
        FROM met
        WHERE t.id = met.task_id AND t.status = 'waiting'
        RETURNING t.status
    )
    SELECT count(*) INTO queued FROM released WHERE status = 'queued';
    IF queued > 0 THEN
        -- wake the dispatchers (the channel and topic of store/wakeups.py)
        PERFORM pg_notify('skiplock_wakeup', 'tasks');
    END IF;

    WITH RECURSIVE doomed (id) AS (
        SELECT d.task_id
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        JOIN task_dependencies d ON d.depends_on = n.id
        JOIN tasks w ON w.id = d.task_id AND w.status = 'waiting'
        WHERE n.status IN ('failed', 'cancelled') AND o.status NOT IN ('failed', 'cancelled')
        UNION
        SELECT d.task_id
        FROM doomed x JOIN task_dependencies d ON d.depends_on = x.id
        JOIN tasks w ON w.id = d.task_id AND w.status = 'waiting'
    )
    UPDATE tasks t
    SET status = 'failed', failed_at = now(), completed_at = now(),
        last_reason = 'dependency_failed'
    FROM doomed
    WHERE t.id = doomed.id AND t.status = 'waiting';
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_updated_dependents AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_release_dependents();
