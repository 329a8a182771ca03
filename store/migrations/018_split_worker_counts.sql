-- A worker's open attempts counted in two rows, so claims and endings never lock the same one.
--
-- Claims lock the rows of the workers they fill (FOR UPDATE SKIP LOCKED) and used to skip a
-- worker whose row an ending held while lowering its count. Now claims count up
-- workers.claimed_total (under that lock) and endings count up worker_endings.ended_total,
-- which no claim locks. A worker's open attempts are claimed_total - ended_total. A claim
-- reads claimed_total at its newest version (the row lock) and ended_total from its snapshot;
-- ended_total only grows, so a claim can only see fewer free slots than there are, never more.

-- Claims and endings wait until the counters are backfilled (attempts first: endings lock it
-- before workers).
LOCK TABLE attempts IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE workers IN ACCESS EXCLUSIVE MODE;

ALTER TABLE workers RENAME COLUMN open_attempts TO claimed_total;
ALTER TABLE workers ALTER COLUMN claimed_total TYPE bigint;
ALTER TABLE workers RENAME CONSTRAINT workers_open_attempts_check TO workers_claimed_total_check;
COMMENT ON COLUMN workers.claimed_total IS
    'attempts ever handed to this worker (since migration 018: its open ones then); claims only';

CREATE TABLE worker_endings (
    worker_id   text PRIMARY KEY REFERENCES workers (id) ON DELETE CASCADE,
    -- attempts of this worker that ended; endings only
    ended_total bigint NOT NULL DEFAULT 0 CHECK (ended_total >= 0)
);

-- Every worker has its endings row from its first insert on.
CREATE FUNCTION worker_endings_of_new_workers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO worker_endings (worker_id) SELECT n.id FROM new_rows n;
    RETURN NULL;
END $$;

CREATE TRIGGER workers_inserted_endings AFTER INSERT ON workers
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION worker_endings_of_new_workers();

-- Both counters from the attempts open now: claimed_total = their count, ended_total = 0.
UPDATE workers w
SET claimed_total = (SELECT count(*) FROM attempts a
                     WHERE a.worker_id = w.id AND a.ended_at IS NULL);
INSERT INTO worker_endings (worker_id) SELECT id FROM workers;

-- What operators and checks read: each worker's open attempts, exact within one snapshot.
CREATE VIEW worker_load AS
SELECT w.id AS worker_id, w.slots, w.claimed_total - e.ended_total AS open_attempts
FROM workers w JOIN worker_endings e ON e.worker_id = w.id;
