-- Waiting tasks at scale.
--
-- GET /stats and GET /queues count the tasks that wait for their dependencies (status
-- 'waiting') through this index, not by scanning every finished task.
CREATE INDEX tasks_waiting_queue ON tasks (queue) WHERE status = 'waiting';

-- The trigger of migration 015, with plans that stay linear in the rows it touches whatever
-- the planner believes: transition tables have no statistics (a join of new_rows with
-- old_rows became a nested loop, quadratic in the rows one statement ended), and on a young
-- table the recursive walk chose a sequential scan per level (quadratic in a chain's length).
-- So the old statuses are looked up through a hashed NOT IN, and each step to the dependents
-- of a task is a subquery on task_dependencies_depends_on that the planner cannot flatten
-- (OFFSET 0), with each dependent's status read by its primary key: index probes per task.
CREATE OR REPLACE FUNCTION tasks_release_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
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
        FROM new_rows n
        CROSS JOIN LATERAL (
            SELECT d.task_id FROM task_dependencies d WHERE d.depends_on = n.id OFFSET 0
        ) d
        WHERE n.status = 'succeeded'
          AND n.id NOT IN (SELECT o.id FROM old_rows o WHERE o.status = 'succeeded')
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
        SELECT w.id
        FROM new_rows n
        CROSS JOIN LATERAL (
            SELECT d.task_id AS id FROM task_dependencies d
            WHERE d.depends_on = n.id
              AND (SELECT w.status FROM tasks w WHERE w.id = d.task_id) = 'waiting'
            OFFSET 0
        ) w
        WHERE n.status IN ('failed', 'cancelled')
          AND n.id NOT IN (SELECT o.id FROM old_rows o WHERE o.status IN ('failed', 'cancelled'))
        UNION
        SELECT w.id
        FROM doomed x
        CROSS JOIN LATERAL (
            SELECT d.task_id AS id FROM task_dependencies d
            WHERE d.depends_on = x.id
              AND (SELECT w.status FROM tasks w WHERE w.id = d.task_id) = 'waiting'
            OFFSET 0
        ) w
    )
    UPDATE tasks t
    SET status = 'failed', failed_at = now(), completed_at = now(),
        last_reason = 'dependency_failed'
    FROM doomed
    WHERE t.id = doomed.id AND t.status = 'waiting';
    RETURN NULL;
END $$;
