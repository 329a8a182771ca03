-- How far pruning has deleted the event stream: a client resuming from before this position
-- has missed events, and GET /events tells it so instead of going on as if it had not.
CREATE TABLE events_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    xid      xid8 NOT NULL,
    id       bigint NOT NULL
);
INSERT INTO events_pruned (xid, id) VALUES ('0', 0);
