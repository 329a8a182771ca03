-- The SQL functions that index expressions and triggers call, written so that the planner
-- inlines them. PostgreSQL inlines an IMMUTABLE SQL function only when its body is immutable
-- too, and neither body was: `timestamptz - interval` and to_char() are STABLE. So both ran as
-- SQL functions, each set up (its body parsed and planned) once per statement per call site:
-- twice per queued task inserted (tasks_queued_rank, tasks_queued_claim), in every claim, and
-- once per task insert for its event. A single-row insert of a task cost the backend about
-- 0.15 ms, of which these were about a third.

-- The same instant as before (migration 008): in UTC, which has no daylight saving, subtracting
-- whole seconds from the local time and converting back is subtracting them from the instant.
-- Every function here is immutable, so the indexes over it stay valid and their expression is
-- matched by the claim's inlined ORDER BY.
CREATE OR REPLACE FUNCTION claim_rank(run_at timestamptz, priority integer) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT (run_at AT TIME ZONE 'UTC' - make_interval(secs => priority * 60)) AT TIME ZONE 'UTC'
    $$;

-- Only triggers call it (no index), so it may say what its body is: stable.
ALTER FUNCTION events_utc(timestamptz) STABLE;
