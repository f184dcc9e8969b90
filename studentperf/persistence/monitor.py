"""What the monitor reads (trainer/monitor/data.py): recent predictions with their inputs and
outcomes, and the figures the trainer stored for each version.

Each prediction comes with the inputs the model saw (its student profile and academic record
rows, not the student's latest ones) and, when one is recorded, its outcome: the outcome of the
student and the term the prediction names (predictions.term), whenever it was recorded. A
prediction that names no term gets the student's first outcome recorded at or after it was
made: earlier ones were known before it, so it did not forecast them.
"""

from __future__ import annotations

from typing import Final

from studentperf.features import ACADEMIC_RECORD_FEATURES, PROFILE_FEATURES

_INPUTS: Final = ", ".join(
    [f"sp.{c}" for c in PROFILE_FEATURES] + [f"ar.{c}" for c in ACADEMIC_RECORD_FEATURES]
)

# $1: the earliest predicted_at (NULL: no limit); $2: at most this many, newest first (NULL: all).
RECENT_PREDICTIONS: Final = f"""
SELECT p.prediction_id, p.model_version, p.predicted_at, p.predicted_final_score,
       p.pass_probability, p.pass_mark, p.score_interval_low, p.score_interval_high,
       p.interval_coverage, {_INPUTS}, o.final_score
FROM (
    SELECT * FROM predictions
    WHERE $1::timestamptz IS NULL OR predicted_at >= $1::timestamptz
    ORDER BY predicted_at DESC, prediction_id
    LIMIT $2::bigint
) p
JOIN student_profiles sp USING (student_profile_id)
JOIN academic_records ar USING (academic_record_id)
LEFT JOIN LATERAL (
    SELECT final_score FROM outcomes
    WHERE outcomes.student_id = p.student_id
      AND (outcomes.term = p.term OR (p.term IS NULL AND outcomes.recorded_at >= p.predicted_at))
    ORDER BY outcomes.recorded_at, outcomes.term
    LIMIT 1
) o ON true
ORDER BY p.predicted_at, p.prediction_id
"""

HELD_OUT: Final = """
SELECT model_version, metrics FROM model_versions WHERE model_version = ANY($1::text[])
"""

GROUP_QUALITY: Final = """
SELECT model_version, group_quality FROM model_versions
WHERE model_version = ANY($1::text[]) AND group_quality IS NOT NULL
"""
