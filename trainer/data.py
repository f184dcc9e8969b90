"""Where training rows come from: PostgreSQL, a CSV file, or the synthetic generator.

By default the rows are the database's outcomes joined to their students (trainer.db_source). If
the database cannot be reached, or holds fewer labelled rows than asked for, the synthetic
generator stands in, and the returned notes say so. A CSV is read when one is given: the public
"Students Performance in Exams" format (trainer.kaggle, bad rows reported and skipped) or our
own columns (FEATURE_COLUMNS and TARGET_SCORE).

Every source ends in `prepare`, so the pipelines always see the serving representation:
numbers as float64 with NaN, categories as object columns of names or None.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from studentperf.features import (
    CATEGORIES,
    FEATURE_COLUMNS,
    NUMERIC_FEATURES,
    NUMERIC_RANGES,
    SCORE_RANGE,
    TARGET_SCORE,
)
from trainer import kaggle, synthetic
from trainer.db_source import DatabaseUnavailable, read_labelled_rows

SHOWN_ROW_ERRORS = 20


# Synthetic students drawn when no number is given.
SYNTHETIC_ROWS: Final = 5000


class TrainingDataError(Exception):
    """The training data cannot be used as it is; the message says why."""


@dataclass(frozen=True)
class TrainingData:
    frame: pd.DataFrame  # FEATURE_COLUMNS + TARGET_SCORE, possibly more columns
    source: str  # a human description, stored in the artifact's metadata
    dropped_rows: int = 0  # rows left out: no target, or a bad row of a CSV
    notes: tuple[str, ...] = field(default=())  # what the user should know: fallbacks, bad rows

    @property
    def sha256(self) -> str:
        """A digest of the rows as the model sees them, in order."""
        rows = pd.util.hash_pandas_object(self.frame[[*FEATURE_COLUMNS, TARGET_SCORE]], index=False)
        return hashlib.sha256(rows.to_numpy().tobytes()).hexdigest()


def load_training_data(
    *,
    csv: Path | None = None,
    rows: int | None = None,
    seed: int,
    database_url: str | None = None,
    min_database_rows: int = 200,
    synthetic_only: bool = False,
    database_only: bool = False,
    unfair_group: str | None = None,
) -> TrainingData:
    """Rows from `csv` when given; else from the database when it has at least
    `min_database_rows`; else `rows` synthetic students (None: SYNTHETIC_ROWS) drawn with
    `seed`. With `database_only` (retraining on recorded data) the fallback is a
    TrainingDataError instead. A `rows` given for data that is not synthetic is noted as unused.
    `unfair_group` plants unfairness in synthetic data (trainer.synthetic); it needs
    `synthetic_only`, so that it never silently does nothing."""
    if unfair_group is not None and not synthetic_only:
        raise TrainingDataError("planting unfairness needs synthetic data (--synthetic)")
    if csv is not None:
        return _rows_unused(read_kaggle(csv) if kaggle.is_kaggle_file(csv) else read_csv(csv), rows)
    if synthetic_only:
        return generate(rows, seed, unfair_group=unfair_group)
    if database_url is None:
        if database_only:
            raise TrainingDataError("retraining needs a database, and none was given")
        return generate(rows, seed, "no database used (--no-database): using synthetic data")
    try:
        found = asyncio.run(read_labelled_rows(database_url))
    except DatabaseUnavailable as err:
        if database_only:
            raise TrainingDataError(f"{err}: retraining uses recorded data only") from err
        return generate(rows, seed, f"{err}: using synthetic data instead")
    if len(found.frame) < min_database_rows:
        shortfall = (
            f"database {found.where} has {len(found.frame)} labelled rows (outcomes), fewer "
            f"than the {min_database_rows} needed (--min-db-rows)"
        )
        if database_only:
            raise TrainingDataError(
                f"{shortfall}; retraining uses recorded data only, never synthetic: record "
                "more outcomes (RecordOutcomes, make import) or lower --min-db-rows"
            )
        return generate(rows, seed, f"{shortfall}: using synthetic data instead")
    frame = prepare(found.frame, f"database {found.where}")
    return _rows_unused(
        TrainingData(
            frame, f"database {found.where}: outcomes joined to their students' current facts"
        ),
        rows,
    )


def _rows_unused(data: TrainingData, rows: int | None) -> TrainingData:
    """`data`, saying that `rows` sized nothing: a number asked for is not silently dropped."""
    if rows is None:
        return data
    note = f"--rows {rows} sizes synthetic data only, and these rows are not synthetic: not used"
    return replace(data, notes=(*data.notes, note))


def generate(
    rows: int | None, seed: int, note: str | None = None, *, unfair_group: str | None = None
) -> TrainingData:
    rows = SYNTHETIC_ROWS if rows is None else rows
    try:
        frame = synthetic.generate(rows, seed, unfair_group)
    except ValueError as err:
        raise TrainingDataError(str(err)) from err
    planted = f", unfair_group={unfair_group!r}" if unfair_group is not None else ""
    source = f"synthetic: trainer.synthetic.generate({rows}, seed={seed}{planted})"
    return TrainingData(prepare(frame, "synthetic data"), source, notes=(note,) if note else ())


def read_csv(path: Path) -> TrainingData:
    """A CSV file with a header holding at least FEATURE_COLUMNS and TARGET_SCORE."""
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise TrainingDataError(f"cannot read {path}: {err}") from err
    labelled = raw[raw[TARGET_SCORE].notna()] if TARGET_SCORE in raw.columns else raw
    frame = prepare(labelled, str(path))
    return TrainingData(frame, f"csv {path.resolve()}", dropped_rows=len(raw) - len(frame))


def read_kaggle(path: Path) -> TrainingData:
    """The Kaggle format: good rows kept, each bad one reported in the notes and left out."""
    try:
        found = kaggle.read(path)
    except kaggle.KaggleFormatError as err:
        raise TrainingDataError(str(err)) from err
    frame = pd.DataFrame(
        {
            "student_id": [r.student_id for r in found.rows],
            **{c: np.full(len(found.rows), np.nan) for c in NUMERIC_FEATURES},
            **{c: pd.Series([getattr(r, c) for r in found.rows], dtype=object) for c in CATEGORIES},
            TARGET_SCORE: [r.final_score for r in found.rows],
        }
    )
    notes = [f"{path}: {len(found.rows)} good rows, {len(found.errors)} bad rows left out"]
    notes += [f"  {error}" for error in found.errors[:SHOWN_ROW_ERRORS]]
    if len(found.errors) > SHOWN_ROW_ERRORS:
        notes.append(f"  ... and {len(found.errors) - SHOWN_ROW_ERRORS} more bad rows")
    return TrainingData(
        prepare(frame, str(path)),
        f"csv {path.resolve()} (Kaggle exam format, sha256 {found.sha256[:12]})",
        dropped_rows=len(found.errors),
        notes=tuple(notes),
    )


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
