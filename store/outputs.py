"""Attempt outputs: the capped copies of what commands wrote (common/output.py).

Functions take a connection; the caller owns the transaction.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Sequence
from uuid import UUID

from store.db import Conn, fetch_one, json_array
from store.models import AttemptOutput, OutputDelta

# Merge output deltas into their attempts' stored copies, each only for the attempt's own
# worker while the attempt is open, and only when it reaches further than the stored copy
# (a delta sent again, or overtaken by a later one, changes nothing). The head grows by the
# new head bytes; the tail continues the stored one when the delta's tail starts inside or
# right after it (else the bytes between were skipped), and keeps only its last `cap` bytes.
# A delta carries every byte from the end of the last one its worker saw delivered, so what
# the stored copy keeps below the delta's start is what the merge needs. Written as common
# table expressions ending in `merged`, so that a statement that ends attempts can merge their
# last output in the same round trip (dispatch.END_ATTEMPTS_AND_OUTPUTS).
MERGE_OUTPUT_CTES = """
d AS (
    SELECT r.task_id, r.attempt, r.worker_id, r.head_offset, decode(r.head, 'base64') AS head,
           r.tail_offset, decode(r.tail, 'base64') AS tail, r.size, r.cap
    FROM jsonb_to_recordset(%(outs)s::jsonb)
         AS r (task_id uuid, attempt int, worker_id text, head_offset int8, head text,
               tail_offset int8, tail text, size int8, cap int8)
), joined AS (
    SELECT d.task_id, d.attempt, d.cap,
           CASE WHEN length(d.head) = 0 THEN coalesce(o.head, ''::bytea)
                ELSE substring(coalesce(o.head, ''::bytea) FROM 1 FOR d.head_offset::int)
                     || d.head END AS head,
           CASE WHEN length(d.tail) = 0 THEN NULL
                WHEN continues
                THEN substring(o.tail FROM 1 FOR (d.tail_offset - o.tail_offset)::int) || d.tail
                ELSE d.tail END AS tail,
           CASE WHEN continues THEN o.tail_offset ELSE d.tail_offset END AS tail_offset
    FROM d
    JOIN attempts a ON a.task_id = d.task_id AND a.attempt = d.attempt
                   AND a.worker_id = d.worker_id AND a.ended_at IS NULL
    LEFT JOIN attempt_outputs o ON o.task_id = d.task_id AND o.attempt = d.attempt
    CROSS JOIN LATERAL (
        SELECT coalesce(o.tail_offset <= d.tail_offset AND d.tail_offset <= o.size, false)
    ) AS c (continues)
    WHERE d.size > coalesce(o.size, -1)
), trimmed AS (
    SELECT task_id, attempt, head,
           coalesce(substring(tail FROM greatest(length(tail) - cap, 0)::int + 1), ''::bytea)
               AS tail,
           CASE WHEN tail IS NULL THEN length(head)
                ELSE tail_offset + greatest(length(tail) - cap, 0) END AS tail_offset
    FROM joined
), merged AS (
    INSERT INTO attempt_outputs AS o (task_id, attempt, head, tail, tail_offset, size, updated_at)
    SELECT task_id, attempt, head, tail, tail_offset, tail_offset + length(tail), now()
    FROM trimmed
    ON CONFLICT (task_id, attempt) DO UPDATE
    SET head = EXCLUDED.head, tail = EXCLUDED.tail, tail_offset = EXCLUDED.tail_offset,
        size = EXCLUDED.size, updated_at = EXCLUDED.updated_at
    WHERE o.size < EXCLUDED.size
    RETURNING o.task_id
)"""

# Merge output deltas (see MERGE_OUTPUT_CTES); returns how many copies grew.
MERGE_OUTPUTS = f"""
WITH {MERGE_OUTPUT_CTES}
SELECT count(*) FROM merged
"""


def output_params(deltas: Sequence[OutputDelta]) -> dict[str, str]:
    """MERGE_OUTPUT_CTES's parameter: the deltas as one JSON array (db.json_array), their bytes
    in base64, which carries any byte (NUL, invalid UTF-8) through JSON unchanged."""
    return {
        "outs": json_array([
            {
                "task_id": d.task_id, "attempt": d.attempt, "worker_id": d.worker_id,
                "head_offset": d.head_offset, "head": b64encode(d.head).decode("ascii"),
                "tail_offset": d.tail_offset, "tail": b64encode(d.tail).decode("ascii"),
                "size": d.size, "cap": d.cap,
            }
            for d in deltas
        ])
    }


async def merge_outputs(conn: Conn, deltas: Sequence[OutputDelta]) -> None:
    """Merge deltas (at most one per attempt) into the stored copies."""
    if not deltas:
        return
    await conn.execute(MERGE_OUTPUTS, output_params(deltas))


# A task's attempt (the latest when none is named) with its stored output, if any. No row: no
# such task; `attempt` NULL: no such attempt (`latest` 0: never dispatched). `seen_size`
# leaves the bytes out (NULL) while the copy is still that size, for followers.
SELECT_ATTEMPT_OUTPUT = """
SELECT t.attempt AS latest, a.attempt, a.ended_at IS NOT NULL AS ended,
       coalesce(o.size, 0) AS size, coalesce(o.tail_offset, 0) AS tail_offset,
       CASE WHEN changed THEN coalesce(o.head, ''::bytea) END AS head,
       CASE WHEN changed THEN coalesce(o.tail, ''::bytea) END AS tail
FROM tasks t
LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = coalesce(%(attempt)s::int, t.attempt)
LEFT JOIN attempt_outputs o ON o.task_id = a.task_id AND o.attempt = a.attempt
CROSS JOIN LATERAL (
    SELECT coalesce(o.size, 0) IS DISTINCT FROM %(seen_size)s::int8
) AS c (changed)
WHERE t.id = %(task_id)s
"""


async def get_attempt_output(
    conn: Conn, task_id: UUID, attempt: int | None, seen_size: int | None = None
) -> AttemptOutput | None:
    """The attempt's stored output; None when the task does not exist."""
    return await fetch_one(
        conn,
        AttemptOutput,
        SELECT_ATTEMPT_OUTPUT,
        {"task_id": task_id, "attempt": attempt, "seen_size": seen_size},
    )
