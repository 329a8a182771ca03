-- Queues and labels: a task names a queue and the labels a worker needs to run it; workers say
-- which queues they serve and which labels they have; queues can be paused.

ALTER TABLE tasks
    ADD COLUMN queue text NOT NULL DEFAULT 'default'
        CHECK (queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- labels the worker must have, {"key": "value"}; {} takes any worker of the queue
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object');
ALTER TABLE schedules
    ADD COLUMN queue text NOT NULL DEFAULT 'default'
        CHECK (queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object');
ALTER TABLE workers
    -- sorted, without repeats: workers with the same queues and labels form one class
    ADD COLUMN queues text[] NOT NULL DEFAULT '{default}'
        CHECK (cardinality(queues) BETWEEN 1 AND 64),
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object');

-- Queues that were ever paused; a queue without a row is running.
CREATE TABLE queues (
    name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    paused     boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The claim scans each served queue in claim order.
DROP INDEX tasks_queued_rank;
CREATE INDEX tasks_queued_claim ON tasks (queue, claim_rank(run_at, priority))
    WHERE status = 'queued';
