-- How a task's command runs, beyond the command itself: variables added to its environment, its
-- working directory, the exit statuses that count as success and its output cap. Schedules
-- carry the same settings for the runs they start.

ALTER TABLE tasks
    -- names to values, added to the worker's minimal base environment
    ADD COLUMN env jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(env) = 'object' AND octet_length(env::text) <= 524288),
    -- absolute path on the worker; NULL runs in the worker's own working directory
    ADD COLUMN cwd text CHECK (cwd IS NULL OR (cwd LIKE '/%' AND octet_length(cwd) <= 4096)),
    ADD COLUMN success_exit_codes smallint[] NOT NULL DEFAULT '{0}'
        CHECK (cardinality(success_exit_codes) BETWEEN 1 AND 256
               AND 0 <= ALL (success_exit_codes) AND 255 >= ALL (success_exit_codes)),
    -- bytes of output kept in the database at each end, when lower than the worker's cap
    ADD COLUMN output_cap_bytes integer CHECK (output_cap_bytes BETWEEN 0 AND 1048576);

ALTER TABLE schedules
    ADD COLUMN env jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(env) = 'object' AND octet_length(env::text) <= 524288),
    ADD COLUMN cwd text CHECK (cwd IS NULL OR (cwd LIKE '/%' AND octet_length(cwd) <= 4096)),
    ADD COLUMN success_exit_codes smallint[] NOT NULL DEFAULT '{0}'
        CHECK (cardinality(success_exit_codes) BETWEEN 1 AND 256
               AND 0 <= ALL (success_exit_codes) AND 255 >= ALL (success_exit_codes)),
    ADD COLUMN output_cap_bytes integer CHECK (output_cap_bytes BETWEEN 0 AND 1048576);
