"""A trained version's `model_versions` row: the facts of its metadata.json (trainer/registry.py).

The recorder inserts a bare row (just the version) the first time it sees a version in an event,
so the trainer upserts: whichever comes first, the row ends up with the trainer's facts. A
promotion's time is kept when a later registration does not promote.
"""

from __future__ import annotations

from typing import Final

# $1-$16: the version's facts in the column order below; $17: promoted now; $18: group quality.
REGISTER_VERSION: Final = """
INSERT INTO model_versions AS m (
    model_version, created_at, pass_mark, data_source, data_sha256, train_rows,
    validation_rows, test_rows, score_estimator, pass_estimator, feature_columns, libraries,
    metrics, baseline_metrics, metadata, promotion_decision, promoted_at, group_quality)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb,
        $15::jsonb, $16, CASE WHEN $17 THEN now() END, $18::jsonb)
ON CONFLICT (model_version) DO UPDATE SET
    created_at = EXCLUDED.created_at,
    pass_mark = EXCLUDED.pass_mark,
    data_source = EXCLUDED.data_source,
    data_sha256 = EXCLUDED.data_sha256,
    train_rows = EXCLUDED.train_rows,
    validation_rows = EXCLUDED.validation_rows,
    test_rows = EXCLUDED.test_rows,
    score_estimator = EXCLUDED.score_estimator,
    pass_estimator = EXCLUDED.pass_estimator,
    feature_columns = EXCLUDED.feature_columns,
    libraries = EXCLUDED.libraries,
    metrics = EXCLUDED.metrics,
    baseline_metrics = EXCLUDED.baseline_metrics,
    metadata = EXCLUDED.metadata,
    promotion_decision = EXCLUDED.promotion_decision,
    promoted_at = COALESCE(EXCLUDED.promoted_at, m.promoted_at),
    group_quality = EXCLUDED.group_quality
"""
