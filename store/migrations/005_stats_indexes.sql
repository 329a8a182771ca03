-- GET /stats and /stats/history read recent activity by time, never the whole table.

-- Finished tasks by when they finished: windowed completion counts and start delays. Partial,
-- so a task pays for it once, when it finishes.
CREATE INDEX tasks_completed_at ON tasks (completed_at) WHERE completed_at IS NOT NULL;
-- The tick ledger by when outcomes were decided: recent tick outcomes.
CREATE INDEX schedule_ticks_recorded_at ON schedule_ticks (recorded_at);
