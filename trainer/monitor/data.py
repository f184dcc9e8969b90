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
from studentperf.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS
from studentperf.persistence.monitor import GROUP_QUALITY, HELD_OUT, RECENT_PREDICTIONS
from trainer.db_source import DatabaseUnavailable, connect


async def read_recent(
    database_url: str, *, since: datetime | None, last: int | None
) -> pd.DataFrame:
    """Predictions in the window, oldest first: model_version, predicted_at, FEATURE_COLUMNS,
    predicted_final_score, pass_probability, pass_mark, score_interval_low, score_interval_high,
    interval_coverage (NaN: no interval), final_score (NaN: no outcome yet)."""
    conn = await connect(database_url)
    try:
        records = await conn.fetch(RECENT_PREDICTIONS, since, last)
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
        rows = await conn.fetch(HELD_OUT, list(versions))
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
        rows = await conn.fetch(GROUP_QUALITY, list(versions))
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
