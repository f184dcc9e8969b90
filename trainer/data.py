"""Where training rows come from: the synthetic generator or a CSV file (PostgreSQL later).

Every source ends in `prepare`, so the pipelines always see the serving representation:
numbers as float64 with NaN, categories as object columns of names or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from studentperf.features import (
    CATEGORIES,
    FEATURE_COLUMNS,
    NUMERIC_FEATURES,
    NUMERIC_RANGES,
    SCORE_RANGE,
    TARGET_SCORE,
)
from trainer import synthetic


class TrainingDataError(Exception):
    """The training data cannot be used as it is; the message says why."""


@dataclass(frozen=True)
class TrainingData:
    frame: pd.DataFrame  # FEATURE_COLUMNS + TARGET_SCORE, possibly more columns
    source: str  # a human description, stored in the artifact's metadata
    dropped_rows: int = 0  # rows without a target, left out


def load_training_data(*, csv: Path | None, rows: int, seed: int) -> TrainingData:
    """Rows from `csv` when given, else `rows` synthetic students drawn with `seed`."""
    if csv is not None:
        return read_csv(csv)
    frame = synthetic.generate(rows, seed)
    source = f"synthetic: trainer.synthetic.generate({rows}, seed={seed})"
    return TrainingData(prepare(frame, "synthetic data"), source)


def read_csv(path: Path) -> TrainingData:
    """A CSV file with a header holding at least FEATURE_COLUMNS and TARGET_SCORE."""
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise TrainingDataError(f"cannot read {path}: {err}") from err
    labelled = raw[raw[TARGET_SCORE].notna()] if TARGET_SCORE in raw.columns else raw
    frame = prepare(labelled, str(path))
    return TrainingData(frame, f"csv {path.resolve()}", dropped_rows=len(raw) - len(frame))


def prepare(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check and normalise a frame; raise TrainingDataError naming what is wrong."""
    missing = [c for c in (*FEATURE_COLUMNS, TARGET_SCORE) if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"{origin} lacks the column(s) {', '.join(missing)}")
    out = frame.copy()
    for column in (*NUMERIC_FEATURES, TARGET_SCORE):
        try:
            out[column] = pd.to_numeric(out[column], errors="raise").astype("float64")
        except (TypeError, ValueError) as err:
            raise TrainingDataError(f"{origin}: column {column} is not numeric: {err}") from err
    for column, (low, high) in NUMERIC_RANGES.items():
        if not out[column].dropna().between(low, high).all():
            raise TrainingDataError(f"{origin}: column {column} has values outside {low}-{high}")
    for column, levels in CATEGORIES.items():
        values = out[column].astype("str").astype(object)
        out[column] = values.where(values.notna(), None)
        unknown = sorted(set(out[column].dropna()) - set(levels))
        if unknown:
            raise TrainingDataError(
                f"{origin}: column {column} has unknown value(s) {unknown}; expected {levels}"
            )
    scores = out[TARGET_SCORE]
    low, high = SCORE_RANGE
    if scores.isna().any() or not scores.between(low, high).all():
        raise TrainingDataError(f"{origin}: every {TARGET_SCORE} must be within {SCORE_RANGE}")
    if out.empty:
        raise TrainingDataError(f"{origin} has no labelled rows")
    return out
