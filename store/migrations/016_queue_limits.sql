-- Queue limits: at most max_running tasks of a queue run at once across the fleet. Only a
-- queue with a limit counts its running tasks (so the claims and ends of other queues never
-- write a shared row): setting a limit counts the open attempts under a SHARE lock on attempts
-- (store/queues.py), then every claim adds and every end subtracts, on the row the claim locks.

ALTER TABLE queues
    ALTER COLUMN paused SET DEFAULT false,
    -- NULL: no limit
    ADD COLUMN max_running integer CHECK (max_running BETWEEN 1 AND 100000),
    -- open attempts of the queue's tasks while it has a limit; 0 without one
    ADD COLUMN running integer NOT NULL DEFAULT 0 CHECK (running >= 0),
    ADD CHECK (max_running IS NOT NULL OR running = 0);
