-- GET /tasks lists newest first, page by page.
CREATE INDEX tasks_created_at ON tasks (created_at DESC, id DESC);
