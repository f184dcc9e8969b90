"""A student's recorded predictions, newest first, a page at a time: the SQL of the history.

Pages are keyset pages on predictions (student_id, predicted_at) (its index, migration 0001):
a page starts strictly after the last (predicted_at, prediction_id) of the one before
(studentperf.history.Cursor).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from studentperf.history import PageQuery

if TYPE_CHECKING:
    import asyncpg

# Every column of a history row, with its inputs and the outcome of its term.
_PAGE: Final = """
SELECT p.prediction_id, p.predicted_final_score, p.pass_probability, p.predicted_pass,
       p.model_version, p.imputed_fields, p.pass_mark, p.term, p.explanation, p.predicted_at,
       p.score_interval_low, p.score_interval_high, p.interval_coverage,
       sp.age, sp.gender, sp.parental_education, sp.lunch_program, sp.test_preparation,
       ar.attendance_percentage, ar.study_hours_per_week, ar.previous_gpa,
       ar.assignments_completed,
       o.final_score AS outcome_final_score
FROM predictions p
JOIN student_profiles sp ON sp.student_profile_id = p.student_profile_id
JOIN academic_records ar ON ar.academic_record_id = p.academic_record_id
LEFT JOIN outcomes o ON o.student_id = p.student_id AND o.term = p.term
WHERE p.student_id = $1
  AND p.predicted_at >= $2 AND p.predicted_at < $3
  AND (p.predicted_at, p.prediction_id) < ($4, $5)
ORDER BY p.predicted_at DESC, p.prediction_id DESC
LIMIT $6
"""

_STUDENT_KNOWN: Final = "SELECT EXISTS (SELECT FROM students WHERE student_id = $1)"

# Bounds that let every prediction through: PostgreSQL's infinities, as asyncpg writes them.
_NEVER_BEFORE = datetime.min
_NEVER_AFTER = datetime.max
_LAST_ID = uuid.UUID(int=(1 << 128) - 1)


async def fetch_page(conn: asyncpg.Connection, query: PageQuery) -> Sequence[asyncpg.Record] | None:
    """Up to `query.limit` rows, newest first; None when the student is unknown."""
    after = query.after
    rows: Sequence[asyncpg.Record] = await conn.fetch(
        _PAGE,
        query.student_id,
        query.start or _NEVER_BEFORE,
        query.end or _NEVER_AFTER,
        after.predicted_at if after else _NEVER_AFTER,
        after.prediction_id if after else _LAST_ID,
        query.limit,
    )
    # An empty page is the one case that needs telling an unknown student from a quiet one.
    if not rows and not await conn.fetchval(_STUDENT_KNOWN, query.student_id):
        return None
    return rows
