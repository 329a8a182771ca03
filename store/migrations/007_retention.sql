-- Retention (coordinator_svc/retention.py, store/retention.py) deletes old rows in small batches.

-- The tick that names a task: deleting a task checks it (the foreign key), and retention keeps
-- a task while a kept tick names it. Without it each such check would read the whole ledger.
CREATE INDEX schedule_ticks_task_id ON schedule_ticks (task_id) WHERE task_id IS NOT NULL;
