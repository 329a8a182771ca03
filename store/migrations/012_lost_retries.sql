-- Lost work: an attempt whose worker was lost or shut down under it failed for the cluster's
-- sake, not the command's; it has its own budget of retries (store/vocabulary.py, RetryBudget).

ALTER TABLE tasks
    ADD COLUMN lost_retries integer NOT NULL DEFAULT 0 CHECK (lost_retries BETWEEN 0 AND 100),
    -- attempts lost that used the lost budget (past it, a lost attempt uses an ordinary retry)
    ADD COLUMN losses integer NOT NULL DEFAULT 0 CHECK (losses >= 0);
ALTER TABLE schedules
    ADD COLUMN lost_retries integer NOT NULL DEFAULT 0 CHECK (lost_retries BETWEEN 0 AND 100);
