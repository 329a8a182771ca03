-- The stored copy of each attempt's output: its first and last bytes, written by coordinators
-- from the deltas workers send, read by the scheduler's GET /tasks/{id}/output.

CREATE TABLE attempt_outputs (
    task_id     uuid NOT NULL,
    attempt     integer NOT NULL,
    -- the output's first bytes, up to the attempt's cap
    head        bytea NOT NULL,
    -- the output's last bytes, [tail_offset, size); empty while everything fits in the head
    tail        bytea NOT NULL,
    tail_offset bigint NOT NULL,
    -- bytes the command had written when the worker last read its output file
    size        bigint NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (task_id, attempt),
    FOREIGN KEY (task_id, attempt) REFERENCES attempts (task_id, attempt) ON DELETE CASCADE,
    -- the bytes between the head and the tail were omitted: none while the tail is empty
    CHECK (tail_offset >= octet_length(head)),
    CHECK (octet_length(tail) > 0 OR tail_offset = octet_length(head)),
    CHECK (size = tail_offset + octet_length(tail))
);
