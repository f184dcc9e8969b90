"""A student's outcome for a term: the one rule that stores it, and the direct writer.

An outcome is keyed by (student_id, term). A score replaces the stored one only when it was
recorded later, ordered by its time and then its place in the event log, as the student's facts
are (student_facts): a re-delivery changes nothing, a late replay of an older score does not
override a newer one. The recorder writes outcome and import events through `upsert_outcomes`;
`store_outcomes` writes directly, as of now and outside the event log: no process does any more
(the tests use it to lay out a database).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from studentperf.outcomes import OutcomeRow
from studentperf.persistence.student_facts import ADD_STUDENTS, OUTSIDE_THE_LOG

if TYPE_CHECKING:
    import asyncpg

# The columns a `rows` query of upsert_outcomes gives, in this order.
OUTCOME_COLUMNS: Final = (
    "student_id",
    "term",
    "final_score",
    "source",
    "recorded_at",
    "recorded_as_of",
    "log_offset",
)


def upsert_outcomes(rows: str, *, returning: str = "") -> str:
    """The statement that stores the outcomes `rows` (a SELECT of OUTCOME_COLUMNS, at most one
    row per student and term, its recorded_at the earliest of what it stands for) by the rule
    above. `returning` is an optional RETURNING list.

    recorded_at is when an outcome of the student and term was first accepted: the earliest
    ever offered, so that it is the same however the events fell into batches and whichever
    came to the log first (an older outcome a spool replays late lowers it without replacing
    the score)."""
    newer = (
        "(EXCLUDED.recorded_as_of, EXCLUDED.log_offset)\n"
        "    > (COALESCE(o.recorded_as_of, '-infinity'), COALESCE(o.log_offset, -1))"
    )
    return f"""
INSERT INTO outcomes AS o ({", ".join(OUTCOME_COLUMNS)})
{rows}
ON CONFLICT (student_id, term) DO UPDATE SET
    final_score = CASE WHEN {newer} THEN EXCLUDED.final_score ELSE o.final_score END,
    source = CASE WHEN {newer} THEN EXCLUDED.source ELSE o.source END,
    -- When the score last changed: an event that repeats it (a duplicate a spool replay may
    -- publish, at a later offset) moves only its order.
    updated_at = CASE WHEN {newer}
                       AND (o.final_score <> EXCLUDED.final_score OR o.source <> EXCLUDED.source)
                      THEN now() ELSE o.updated_at END,
    recorded_at = LEAST(o.recorded_at, EXCLUDED.recorded_at),
    recorded_as_of = CASE WHEN {newer} THEN EXCLUDED.recorded_as_of ELSE o.recorded_as_of END,
    log_offset = CASE WHEN {newer} THEN EXCLUDED.log_offset ELSE o.log_offset END
WHERE {newer}
    OR EXCLUDED.recorded_at < o.recorded_at""" + (f"\nRETURNING {returning}" if returning else "")


# As of now, outside the event log: an outcome event recorded later replaces it, a late replay
# of an older one does not (migration 0009). xmax is 0 on a freshly inserted row version and
# set on one that an update produced; an update that kept the score (it only moved recorded_at
# earlier, below one stamped by a clock ahead) left the row's order as it was, not this one.
_STORE_OUTCOMES: Final = upsert_outcomes(
    f"""SELECT student_id, term, final_score, source, now(), now(), {OUTSIDE_THE_LOG}::bigint
FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[])
    AS given(student_id, term, final_score, source)""",
    returning=(
        "student_id, term, xmax <> 0 AND recorded_as_of = now()"
        f" AND log_offset = {OUTSIDE_THE_LOG} AS replaced"
    ),
)


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    replaced: bool  # the student and term had a score already; this one replaced it
    student_added: bool  # the student was unknown and was added without a profile


async def store_outcomes(
    conn: asyncpg.Connection, rows: Sequence[OutcomeRow], *, source: str
) -> list[StoredOutcome]:
    """Stores valid, distinct-keyed rows in one transaction, the missing students added first
    (the foreign key stays intact); one result per row, in order."""
    if not rows:
        return []
    if len({(r.student_id, r.term) for r in rows}) != len(rows):
        raise ValueError("one statement cannot write a student and term twice")
    async with conn.transaction():
        added = {
            r["student_id"] for r in await conn.fetch(ADD_STUDENTS, [r.student_id for r in rows])
        }
        written = await conn.fetch(
            _STORE_OUTCOMES,
            [r.student_id for r in rows],
            [r.term for r in rows],
            [r.final_score for r in rows],
            [source] * len(rows),
        )
    # A row the rule kept (one recorded later than now: a clock ahead) is not returned, or
    # returned as not replaced when only its recorded_at moved.
    replaced = {(r["student_id"], r["term"]): bool(r["replaced"]) for r in written}
    return [
        StoredOutcome(replaced.get((r.student_id, r.term), False), r.student_id in added)
        for r in rows
    ]
