"""Erasing a student: the deletes, the audit row, and the lookup of erased students
(recorder_service/erasure.py runs them, in one transaction under ERASURE_ROLE, migration 0010);
the inference service reads the audit row back (ERASURE_REMOVED).
"""

from __future__ import annotations

from typing import Final

from studentperf.persistence.student_facts import FACTS, as_of, log_offset

ERASURE_ROLE: Final = "studentperf_erasure"
SET_ERASURE_ROLE: Final = f"SET LOCAL ROLE {ERASURE_ROLE}"

# Children before the tables they refer to: the foreign keys hold at every step. `students`
# goes last, after what the others keep is restamped and its facts of before are forgotten
# (RESTAMP_OUTCOMES, RESEEN, FORGET_FACTS; recorder_service/erasure.py runs them in that order).
ERASED_CHILD_TABLES: Final[tuple[str, ...]] = (
    "predictions",
    "outcomes",
    "student_profiles",
    "academic_records",
)
ERASED_TABLES: Final[tuple[str, ...]] = (*ERASED_CHILD_TABLES, "students")
# $1: the student id, $2: the erasure's time (erased_as_of). What the student gave at or
# before it goes; what came later (a new enrolment whose events met the erasure's in another
# order: another instance's, or a spooled erasure's) stays, as it would had it come after the
# erasure in the log, where events at or before that time are skipped. So the outcome does not
# depend on how the log falls into batches. Profiles and academic records have no time: they go
# unless a prediction made later uses them.
DELETE_STUDENT: Final = {
    "predictions": "DELETE FROM predictions WHERE student_id = $1 AND predicted_at <= $2",
    "outcomes": (
        "DELETE FROM outcomes WHERE student_id = $1 AND COALESCE(recorded_as_of, recorded_at) <= $2"
    ),
    **{
        table: f"""DELETE FROM {table} t WHERE student_id = $1 AND NOT EXISTS (
    SELECT FROM predictions p
    WHERE p.student_id = $1 AND p.{key} = t.{key} AND p.predicted_at > $2)"""
        for table, key in (
            ("student_profiles", "student_profile_id"),
            ("academic_records", "academic_record_id"),
        )
    },
    # FORGET_FACTS ran first: a student with a fact of later still has its profile_as_of.
    "students": """DELETE FROM students WHERE student_id = $1 AND profile_as_of <= $2
    AND NOT EXISTS (SELECT FROM predictions WHERE student_id = $1)
    AND NOT EXISTS (SELECT FROM outcomes WHERE student_id = $1)""",
}
assert tuple(DELETE_STUDENT) == ERASED_TABLES


def _forget(fact: str) -> str:
    return ", ".join(
        f"{column} = CASE WHEN {as_of(fact)} > $2 THEN {column} END"
        for column in (fact, log_offset(fact), as_of(fact))
    )


# The facts of `students` given at or before the erasure ($2), and when the student was first
# seen (the recorder's clock, which says nothing of the events' times: a row kept is seen anew);
# run before DELETE_STUDENT["students"], which removes the row if nothing later is left.
FORGET_FACTS: Final = f"""UPDATE students SET
    {", ".join(_forget(fact) for fact in FACTS)},
    profile_as_of = CASE WHEN profile_as_of > $2 THEN profile_as_of ELSE '-infinity' END,
    first_seen_at = now()
WHERE student_id = $1"""
# A kept outcome (one given after the erasure for a term the student had one for before) was
# first recorded as of the erased one: it is now recorded as of the score it keeps, and updated
# now (an equal score given again does not move updated_at). The time the first outcome after
# the erasure was accepted is not stored once a later one replaced it, so recorded_at may be
# later here than had the erasure been applied before them (README, "Erasure").
RESTAMP_OUTCOMES: Final = """UPDATE outcomes SET recorded_at = recorded_as_of, updated_at = now()
WHERE student_id = $1 AND recorded_at <= $2 AND recorded_as_of > $2"""
# $1: the student id. The rest of what a later enrolment keeps loses its traces of before: a
# profile or academic record it shares (content-derived) with the erased enrolment is seen
# anew, and no imported row names the student (the ids stay: a file imported again skips them).
RESEEN: Final = (
    "UPDATE student_profiles SET first_seen_at = now() WHERE student_id = $1",
    "UPDATE academic_records SET first_seen_at = now() WHERE student_id = $1",
    # Rows noted before imports stopped naming the student (studentperf.persistence.imports).
    "UPDATE imported_rows SET student_id = NULL WHERE student_id = $1",
)
# Whether the student has a fact given at or before the erasure ($2): a students row a later
# enrolment keeps then loses facts, which the erasure reports (`student_facts`).
HAD_FACTS: Final = f"""SELECT EXISTS (SELECT FROM students WHERE student_id = $1 AND (
    {" OR ".join(f"{as_of(fact)} <= $2" for fact in FACTS)}))"""
ALREADY_APPLIED: Final = "SELECT true FROM erasures WHERE event_id = $1"
AUDIT: Final = """
INSERT INTO erasures (event_id, student_hash, erased_as_of, requested_by, reason, removed)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (event_id) DO NOTHING
"""
# What the erasure $1 removed, per table, with the entries that name no table (jsonb; the keys
# of studentperf.erasure); no row until the recorder applied it, and the row is written whole.
ERASURE_REMOVED: Final = "SELECT removed FROM erasures WHERE event_id = $1"
# The newest erasure of each of a batch's students.
ERASED_AS_OF: Final = """
SELECT student_hash, max(erased_as_of) AS erased_as_of
FROM erasures WHERE student_hash = ANY($1::bytea[])
GROUP BY student_hash
"""
