"""What `make demo` (infra/demo.py) reads back: the rows its predictions became."""

from __future__ import annotations

from typing import Final

# $1: the demo's prediction ids. What a person checks: the facts stored, the score, the lag.
PREDICTIONS_SHOWN: Final = """
SELECT p.prediction_id, p.student_id, sp.age, a.attendance_percentage, a.previous_gpa,
       round(p.predicted_final_score::numeric, 1) AS score,
       round(p.pass_probability::numeric, 2) AS p_pass, p.predicted_pass, p.model_version,
       cardinality(p.imputed_fields) AS imputed, p.recorded_at - p.predicted_at AS lag
FROM predictions p
JOIN student_profiles sp USING (student_profile_id)
JOIN academic_records a USING (academic_record_id)
WHERE p.prediction_id = ANY($1)
ORDER BY p.predicted_at, p.student_id
"""
