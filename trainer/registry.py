"""The `model_versions` row of a trained version: the facts of its metadata.json, in SQL.

The recorder inserts a bare row (just the version) the first time it sees a version in an event,
so the trainer upserts: whichever comes first, the row ends up with the trainer's facts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from trainer.db_source import DatabaseUnavailable, connect

_UPSERT = """
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


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


async def register_version(
    database_url: str, metadata: Mapping[str, Any], *, decision: str, promoted: bool
) -> None:
    """Upserts the version's row; raises DatabaseUnavailable when it cannot be written."""
    conn = await connect(database_url)
    try:
        await conn.execute(
            _UPSERT,
            metadata["version"],
            datetime.fromisoformat(metadata["created_at"]),
            metadata["pass_mark"],
            metadata["data_source"],
            metadata["data_sha256"],
            metadata["train_rows"],
            metadata["validation_rows"],
            metadata["test_rows"],
            metadata["estimators"]["score"],
            metadata["estimators"]["pass"],
            list(metadata["feature_columns"]),
            _json(metadata["libraries"]),
            _json(metadata["metrics"]),
            _json(metadata["baseline_metrics"]),
            _json(metadata),
            decision,
            promoted,
            _json(metadata["group_quality"]) if "group_quality" in metadata else None,
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise DatabaseUnavailable(f"writing model_versions failed: {err}") from err
    finally:
        await conn.close()
