"""The training inputs a version keeps for drift monitoring: `reference_inputs.csv`.

A seeded random sample of at most `REFERENCE_ROWS` of the rows the model was fitted on (train +
validation; never the test split's), the feature columns only, in the serving representation:
numbers as written by pandas (an empty field when missing), categories by name (empty when
missing). A plain CSV, so a person or another tool can read it too; 2,000 rows are about 100 kB
and estimate ten quantile bins to within a couple of percentage points.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

import pandas as pd

from studentperf.features import CATEGORIES, FEATURE_COLUMNS, NUMERIC_FEATURES

REFERENCE_FILE: Final = "reference_inputs.csv"
REFERENCE_ROWS: Final = 2000


class ReferenceError(Exception):
    """A version's reference file exists but cannot be used; the message says why."""


def sample(fitted_on: pd.DataFrame, seed: int, rows: int = REFERENCE_ROWS) -> pd.DataFrame:
    """Up to `rows` rows of `fitted_on`'s FEATURE_COLUMNS, drawn without replacement."""
    features = fitted_on[list(FEATURE_COLUMNS)]
    if len(features) > rows:
        features = features.sample(n=rows, random_state=seed)
    return features.reset_index(drop=True)


def to_csv_bytes(reference: pd.DataFrame) -> bytes:
    text: str = reference[list(FEATURE_COLUMNS)].to_csv(index=False)
    return text.encode()


def from_csv_bytes(content: bytes, origin: str) -> pd.DataFrame:
    """The frame `to_csv_bytes` wrote, back in the serving representation."""
    try:
        raw = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as err:
        raise ReferenceError(f"{origin}: not a CSV: {err}") from err
    missing = [c for c in FEATURE_COLUMNS if c not in raw.columns]
    if missing:
        raise ReferenceError(f"{origin} lacks the column(s) {', '.join(missing)}")
    frame = pd.DataFrame(index=raw.index)
    for column in NUMERIC_FEATURES:
        values = raw[column].where(raw[column] != "", None)
        try:
            frame[column] = pd.to_numeric(values, errors="raise").astype("float64")
        except (TypeError, ValueError) as err:
            raise ReferenceError(f"{origin}: column {column} is not numeric: {err}") from err
    for column, levels in CATEGORIES.items():
        values = raw[column].astype(object)
        frame[column] = values.where(values != "", None)
        unknown = sorted(set(frame[column].dropna()) - set(levels))
        if unknown:
            raise ReferenceError(f"{origin}: column {column} has unknown value(s) {unknown}")
    return frame[list(FEATURE_COLUMNS)]


def read(version_dir: Path) -> pd.DataFrame | None:
    """The version's reference inputs; None when it was saved without them."""
    path = version_dir / REFERENCE_FILE
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ReferenceError(f"cannot read {path}: {err}") from err
    return from_csv_bytes(content, str(path))
