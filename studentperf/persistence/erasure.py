"""Erasing a student: the deletes, the audit row, and the lookup of erased students
(recorder_service/erasure.py runs them, in one transaction under ERASURE_ROLE, migration 0010);
the inference service reads the audit row back (ERASURE_REMOVED).
"""

from __future__ import annotations

from typing import Final

ERASURE_ROLE: Final = "studentperf_erasure"
SET_ERASURE_ROLE: Final = f"SET LOCAL ROLE {ERASURE_ROLE}"

# Children before the tables they refer to: the foreign keys hold at every step.
ERASED_TABLES: Final[tuple[str, ...]] = (
    "predictions",
    "outcomes",
    "student_profiles",
    "academic_records",
    "students",
)
# $1: the student id.
DELETE_STUDENT: Final = {
    table: f"DELETE FROM {table} WHERE student_id = $1" for table in ERASED_TABLES
}
ALREADY_APPLIED: Final = "SELECT true FROM erasures WHERE event_id = $1"
AUDIT: Final = """
INSERT INTO erasures (event_id, student_hash, erased_as_of, requested_by, reason, removed)
VALUES ($1, $2, $3, $4, $5, $6::jsonb)
ON CONFLICT (event_id) DO NOTHING
"""
# What the erasure $1 removed, per table (jsonb); no row until the recorder applied it.
ERASURE_REMOVED: Final = "SELECT removed FROM erasures WHERE event_id = $1"
# The newest erasure of each of a batch's students.
ERASED_AS_OF: Final = """
SELECT student_hash, max(erased_as_of) AS erased_as_of
FROM erasures WHERE student_hash = ANY($1::bytea[])
GROUP BY student_hash
"""
