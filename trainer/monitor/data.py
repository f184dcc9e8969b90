"""What the monitor reads from PostgreSQL: recent predictions with their inputs and outcomes.

Each prediction comes with the inputs the model saw (its student profile and academic record
rows, not the student's latest ones) and, when one is recorded, its outcome: the outcome of the
student and the term the prediction names (predictions.term), whenever it was recorded. A
prediction that names no term (recorded before terms were, or by a service with no current term
configured) gets the student's first outcome recorded at or after it was made, as before terms
existed: earlier ones were known before it, so it did not forecast them. Every prediction
counts, so a student predicted twice weighs twice, as the service's answers did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np
import pandas as pd

from studentperf.config import mask_dsn
from studentperf.features import (
    ACADEMIC_RECORD_FEATURES,
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    PROFILE_FEATURES,
)
from trainer.db_source import DatabaseUnavailable, connect

_COLUMNS = ", ".join(
    [f"sp.{c}" for c in PROFILE_FEATURES] + [f"ar.{c}" for c in ACADEMIC_RECORD_FEATURES]
)

# $1: the earliest predicted_at (NULL: no limit); $2: at most this many, newest first (NULL: all).
_RECENT = f"""
SELECT p.prediction_id, p.model_version, p.predicted_at, p.predicted_final_score,
       p.pass_probability, p.pass_mark, p.score_interval_low, p.score_interval_high,
       p.interval_coverage, {_COLUMNS}, o.final_score
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

_HELD_OUT = """
SELECT model_version, metrics FROM model_versions WHERE model_version = ANY($1::text[])
"""

_GROUP_QUALITY = """
SELECT model_version, group_quality FROM model_versions
WHERE model_version = ANY($1::text[]) AND group_quality IS NOT NULL
"""


async def read_recent(
    database_url: str, *, since: datetime | None, last: int | None
) -> pd.DataFrame:
    """Predictions in the window, oldest first: model_version, predicted_at, FEATURE_COLUMNS,
    predicted_final_score, pass_probability, pass_mark, score_interval_low, score_interval_high,
    interval_coverage (NaN: no interval), final_score (NaN: no outcome yet)."""
    conn = await connect(database_url)
    try:
        records = await conn.fetch(_RECENT, since, last)
    except asyncpg.UndefinedTableError as err:
        raise DatabaseUnavailable(
            f"database {mask_dsn(database_url)} is not migrated ({err}): run `make migrate`"
        ) from err
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise DatabaseUnavailable(f"reading predictions failed: {err}") from err
    finally:
        await conn.close()
    return _frame(records)


async def read_held_out(database_url: str, versions: Sequence[str]) -> dict[str, dict[str, float]]:
    """`model_versions.metrics` of the versions that have them (the trainer's test figures)."""
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(_HELD_OUT, list(versions))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise DatabaseUnavailable(f"reading model_versions failed: {err}") from err
    finally:
        await conn.close()
    return {r["model_version"]: json.loads(r["metrics"]) for r in rows if r["metrics"]}


async def read_group_quality(database_url: str, versions: Sequence[str]) -> dict[str, Any]:
    """`model_versions.group_quality` of the versions that have it (their per-group figures at
    training, trainer.group_quality.GroupQuality.as_dict)."""
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(_GROUP_QUALITY, list(versions))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
        raise DatabaseUnavailable(f"reading model_versions failed: {err}") from err
    finally:
        await conn.close()
    return {r["model_version"]: json.loads(r["group_quality"]) for r in rows}


def _frame(records: Sequence[Any]) -> pd.DataFrame:
    numbers = (
        "predicted_final_score",
        "pass_probability",
        "pass_mark",
        "score_interval_low",
        "score_interval_high",
        "interval_coverage",
        "final_score",
        *(c for c in FEATURE_COLUMNS if c not in CATEGORICAL_FEATURES),
    )
    frame = pd.DataFrame(
        {
            "model_version": pd.Series([r["model_version"] for r in records], dtype=object),
            "predicted_at": pd.to_datetime([r["predicted_at"] for r in records], utc=True),
        }
    )
    for column in numbers:
        # booleans and smallints alike; None becomes NaN
        frame[column] = np.array(
            [np.nan if r[column] is None else float(r[column]) for r in records], dtype=np.float64
        )
    for column in CATEGORICAL_FEATURES:
        frame[column] = pd.Series([r[column] for r in records], dtype=object)
    return frame
