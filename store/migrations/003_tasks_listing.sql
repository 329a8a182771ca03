-- GET /tasks lists newest first, page by page.
CREATE INDEX tasks_created_at ON tasks (created_at DESC, id DESC);

-- No statement looks tasks up by "still active": every status change paid to maintain it.
DROP INDEX tasks_active;
