-- Concurrency limits: at most concurrency_limit tasks with the same concurrency_key run at
-- once across the fleet. Each key has a counter row that the claim locks (so coordinators that
-- claim at the same time read its newest value) and that ending an attempt decrements.

ALTER TABLE tasks
    ADD COLUMN concurrency_key text
        CHECK (concurrency_key ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$'),
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit BETWEEN 1 AND 10000),
    ADD CHECK ((concurrency_key IS NULL) = (concurrency_limit IS NULL));
ALTER TABLE schedules
    ADD COLUMN concurrency_key text
        CHECK (concurrency_key ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$'),
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit BETWEEN 1 AND 10000),
    ADD CHECK ((concurrency_key IS NULL) = (concurrency_limit IS NULL));

CREATE TABLE concurrency_keys (
    key     text PRIMARY KEY,
    -- open attempts of tasks with this key: +1 per claim, -1 per ended attempt
    running integer NOT NULL DEFAULT 0 CHECK (running >= 0)
);

-- Every key a task names has its counter row before the task can be claimed.
CREATE FUNCTION concurrency_keys_of_new_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO concurrency_keys (key)
    SELECT DISTINCT concurrency_key FROM new_rows WHERE concurrency_key IS NOT NULL
    ON CONFLICT (key) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_inserted_concurrency_keys AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION concurrency_keys_of_new_tasks();
