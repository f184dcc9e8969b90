"""A student's current facts: the one rule that merges what each writer says into `students`.

Every feature (profile and academic record alike) is a fact of its own. A fact given replaces
the stored one only when it was given later, ordered by the event's time and, at the same
time, by its place in the log (one student's events are on one partition, so its offset
orders them); a fact not given keeps the stored value. So a sparse request erases nothing, an
event replayed late from a spool fills only what newer events left out, and re-delivering
an event changes nothing. Each fact carries when it was given (`<fact>_as_of`,
`<fact>_log_offset`), so the merge of one batch costs one upsert per student, however long
the student's history is.

The recorder (and studentperf.persistence.outcomes' direct outcome store) write `students`
only through here.
"""

from __future__ import annotations

from typing import Final

from studentperf.features import FEATURE_PARTS

# In the proto's order: the profile's facts, then the academic record's.
FACTS: Final = tuple(FEATURE_PARTS)

# The log position of what is written from outside the event log (outcomes.store_outcomes;
# CSV imports did before they went through Kafka): it ranks
# before any event of the same instant.
OUTSIDE_THE_LOG: Final = -1


# Of the one row a FILTER below leaves, max() takes the value; PostgreSQL has no max(boolean).
# (array_agg(...))[1] would do for any type, but builds an array per student and fact.
_BOOLEAN_FACTS: Final = frozenset({"assignments_completed"})


def as_of(fact: str) -> str:
    return f"{fact}_as_of"


def log_offset(fact: str) -> str:
    return f"{fact}_log_offset"


# A student known only by its id (an outcome recorded first): no fact given yet, and a
# profile_as_of older than any event.
ADD_STUDENTS: Final = """
INSERT INTO students (student_id, profile_as_of)
SELECT DISTINCT unnest($1::text[]), '-infinity'::timestamptz
ON CONFLICT (student_id) DO NOTHING
RETURNING student_id
"""


def _newer(fact: str) -> str:
    """Whether the incoming fact replaces the stored one: given, and given later. A fact not
    given compares as NULL (not newer); one never stored as older than any."""
    new = f"(EXCLUDED.{as_of(fact)}, EXCLUDED.{log_offset(fact)})"
    old = f"(COALESCE(s.{as_of(fact)}, '-infinity'), COALESCE(s.{log_offset(fact)}, -1))"
    return f"{new} > {old}"


def merge_statement(given: str, *, returning: str = "") -> str:
    """The statement that merges the facts in `given` into `students`.

    `given` is a FROM item with the columns student_id, every fact in FACTS (NULL: not
    given), given_at (timestamptz) and log_offset (bigint); a student may have many rows.
    Within them, and then against the stored row, each fact's latest given value wins.
    `returning` is an optional RETURNING list (`xmax = 0` tells an inserted row).
    """
    # Each row's place among its student's rows, by the rule's order; then, per fact, the place
    # of the latest row that gave it. One sort serves every fact: ordered aggregates
    # (array_agg(... ORDER BY ...)) would sort each fact of each student apart, which cost
    # twice the whole upsert in the recorder's benchmark.
    marks = ", ".join(
        f"max(pos) FILTER (WHERE {fact} IS NOT NULL) OVER by_student AS {fact}_pos"
        for fact in FACTS
    )
    columns = ["student_id"]
    values = ["student_id"]
    updates = []
    for fact in FACTS:
        columns += [fact, as_of(fact), log_offset(fact)]
        latest = f"FILTER (WHERE pos = {fact}_pos)"
        values += [
            f"{'bool_or' if fact in _BOOLEAN_FACTS else 'max'}({fact}) {latest}",
            f"max(given_at) {latest}",
            f"max(log_offset) {latest}",
        ]
        newer = _newer(fact)
        updates += [
            f"{column} = CASE WHEN {newer} THEN EXCLUDED.{column} ELSE s.{column} END"
            for column in (fact, as_of(fact), log_offset(fact))
        ]
    # The newest time any of the student's facts was given ('-infinity': none yet).
    any_given = " OR ".join(f"{fact} IS NOT NULL" for fact in FACTS)
    columns.append("profile_as_of")
    values.append(f"COALESCE(max(given_at) FILTER (WHERE {any_given}), '-infinity')")
    updates.append("profile_as_of = GREATEST(s.profile_as_of, EXCLUDED.profile_as_of)")
    # Nothing newer (a re-delivery, a late replay that adds nothing): no new row version.
    changed = " OR ".join(_newer(fact) for fact in FACTS)
    sep = ",\n    "
    return (
        "WITH ranked AS (\n"
        "    SELECT given.*, row_number() OVER (\n"
        "        PARTITION BY student_id ORDER BY given_at, log_offset) AS pos\n"
        f"    FROM {given}\n"
        "), marked AS (\n"
        f"    SELECT ranked.*, {marks}\n"
        "    FROM ranked WINDOW by_student AS (PARTITION BY student_id)\n"
        ")\n"
        f"INSERT INTO students AS s ({', '.join(columns)})\n"
        f"SELECT {sep.join(values)}\n"
        "FROM marked\n"
        "GROUP BY student_id\n"
        f"ON CONFLICT (student_id) DO UPDATE SET\n    {sep.join(updates)}\n"
        f"WHERE {changed}" + (f"\nRETURNING {returning}" if returning else "")
    )
