-- Resource limits a task's command and everything it starts run under (hard rlimits, which no
-- descendant can raise): address space, CPU time, open files. NULL: the worker's own. Schedules
-- carry the same limits for the runs they start.

ALTER TABLE tasks
    ADD COLUMN memory_limit_bytes bigint
        CHECK (memory_limit_bytes BETWEEN 16777216 AND 1099511627776),
    ADD COLUMN cpu_limit_seconds integer CHECK (cpu_limit_seconds BETWEEN 1 AND 2678400),
    ADD COLUMN open_files_limit integer CHECK (open_files_limit BETWEEN 16 AND 1048576);

ALTER TABLE schedules
    ADD COLUMN memory_limit_bytes bigint
        CHECK (memory_limit_bytes BETWEEN 16777216 AND 1099511627776),
    ADD COLUMN cpu_limit_seconds integer CHECK (cpu_limit_seconds BETWEEN 1 AND 2678400),
    ADD COLUMN open_files_limit integer CHECK (open_files_limit BETWEEN 16 AND 1048576);
