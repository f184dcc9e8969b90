"""Retention: deleting predictions older than a cutoff, and what only they referred to
(recorder_service/store.py's remove_batch runs them).

Each batch is one short transaction under the role that may delete (migration 0007); its
statements run one after another, each seeing what the ones before it deleted, which one
statement of data-modifying CTEs would not.
"""

from __future__ import annotations

from typing import Final

RETENTION_ROLE: Final = "studentperf_retention"
SET_RETENTION_ROLE: Final = f"SET LOCAL ROLE {RETENTION_ROLE}"

# The oldest first, by predictions_predicted_at_idx, then each by its primary key: a batch
# touches only the rows it deletes. (With `IN (SELECT ...)` the planner may hash-join against
# a scan of the whole table; `= ANY(ARRAY(...))` is an index condition.)
REMOVE_PREDICTIONS: Final = """
DELETE FROM predictions
WHERE prediction_id = ANY(ARRAY(
    SELECT prediction_id FROM predictions
    WHERE predicted_at < $1
    ORDER BY predicted_at
    LIMIT $2))
RETURNING student_id, student_profile_id, academic_record_id
"""

# Of the profiles and records the batch's predictions used, those no prediction uses any more.
REMOVE_PROFILES: Final = """
DELETE FROM student_profiles sp
WHERE sp.student_profile_id = ANY($1::uuid[])
  AND NOT EXISTS (SELECT FROM predictions p WHERE p.student_profile_id = sp.student_profile_id)
"""

REMOVE_RECORDS: Final = """
DELETE FROM academic_records ar
WHERE ar.academic_record_id = ANY($1::uuid[])
  AND NOT EXISTS (SELECT FROM predictions p WHERE p.academic_record_id = ar.academic_record_id)
"""

# A student's current facts go only when nothing refers to the student any more and none of
# the facts was given since the cutoff: a student with outcomes, or newer predictions, stays.
REMOVE_STUDENTS: Final = """
DELETE FROM students s
WHERE s.student_id = ANY($1::text[])
  AND s.profile_as_of < $2
  AND NOT EXISTS (SELECT FROM predictions p WHERE p.student_id = s.student_id)
  AND NOT EXISTS (SELECT FROM student_profiles sp WHERE sp.student_id = s.student_id)
  AND NOT EXISTS (SELECT FROM academic_records ar WHERE ar.student_id = s.student_id)
  AND NOT EXISTS (SELECT FROM outcomes o WHERE o.student_id = s.student_id)
"""
