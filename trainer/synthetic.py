"""A synthetic student table with planted, documented effects (the default training data).

    final_score = BASE_SCORE
                + sum(NUMERIC_EFFECTS[c] * (x[c] - NUMERIC_CENTRES[c]))
                + sum(CATEGORY_EFFECTS[c][x[c]])
                + Normal(0, NOISE_SD)

clipped to [0, 100] and rounded to 0.1. Effects in points of final score, with the spread they
cause (effect per unit x the feature's standard deviation in the generated data):

| feature               | effect                           | spread (1 sd) |
|-----------------------|----------------------------------|---------------|
| attendance_percentage | +0.6 per point (sd ~11)          | ~6.7          |
| previous_gpa          | +10 per GPA point (sd ~0.58)     | ~5.8          |
| study_hours_per_week  | +0.7 per hour (sd ~6.9)          | ~4.8          |
| assignments_completed | +4 if all handed in (70 % did)   | ~1.8          |
| test_preparation      | completed +4 vs none             | ~1.9          |
| parental_education    | some_high_school -1.5 ... +5     | ~1.75         |
| lunch_program         | free_or_reduced -2.5 vs standard | ~1.2          |
| age, gender           | none                             | 0             |

With NOISE_SD = 7 the best possible R² is about 0.7; the mean score is about 53 (sd ~12.7) and
about 39 % of students score below 50. Parental education: some_high_school -1.5,
high_school 0, some_college +1, associate +1.5, bachelor +3, master +4, doctorate +5.
Feature values are drawn independently (so a linear model can recover the effects): age uniform
14-19; attendance 100 x Beta(8, 1.5) (mean 84, ~4 % below 60); GPA Normal(2.9, 0.6) clipped to
0-4; study hours Gamma(3, 4) clipped to 0-40 (mean 12); assignments_completed (a boolean, 1.0 when
every assignment was handed in) Bernoulli(0.7); categories with the shares in CATEGORY_SHARES
(a level added later drawn as described at SPLIT_LEVELS).
After the score is computed, each feature value is blanked with probability MISSING_RATE (NaN for
numbers, None for categories), as real forms arrive incomplete; the score stays that of the full
record.

Planted unfairness (`unfair_group`, e.g. "lunch_program=free_or_reduced"; off by default): the
scores of that group's students get extra noise, Normal(0, UNFAIR_NOISE_SD), that no input
explains, as when the inputs describe one group's students worse than the others'. Any model
then serves that group worse (its RMSE about 16.6 instead of 7, its ROC-AUC and error rates
worse), which is what the per-group figures and the promotion gate must catch. The other rows,
and every row when the option is off, are the same as without it.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from studentperf.features import CATEGORIES, FEATURE_COLUMNS, SCORE_RANGE, TARGET_SCORE

BASE_SCORE: Final = 51.0
NOISE_SD: Final = 7.0
UNFAIR_NOISE_SD: Final = 15.0
MISSING_RATE: Final = 0.025

NUMERIC_EFFECTS: Final[dict[str, float]] = {
    "attendance_percentage": 0.6,
    "previous_gpa": 10.0,
    "study_hours_per_week": 0.7,
    "assignments_completed": 4.0,
    "age": 0.0,
}
# The value at which each numeric effect is zero (about the population mean).
NUMERIC_CENTRES: Final[dict[str, float]] = {
    "attendance_percentage": 84.0,
    "previous_gpa": 2.9,
    "study_hours_per_week": 12.0,
    "assignments_completed": 0.7,
    "age": 16.5,
}
CATEGORY_EFFECTS: Final[dict[str, dict[str, float]]] = {
    "gender": {"female": 0.0, "male": 0.0, "other": 0.0},
    "parental_education": {
        "some_high_school": -1.5,
        "high_school": 0.0,
        "some_college": 1.0,
        "associate": 1.5,
        "bachelor": 3.0,
        "master": 4.0,
        "doctorate": 5.0,
    },
    "lunch_program": {"standard": 0.0, "free_or_reduced": -2.5},
    "test_preparation": {"none": 0.0, "completed": 4.0},
}
CATEGORY_SHARES: Final[dict[str, tuple[float, ...]]] = {
    "gender": (0.49, 0.49, 0.02),
    "parental_education": (0.10, 0.20, 0.22, 0.12, 0.20, 0.12, 0.04),
    "lunch_program": (0.65, 0.35),
    "test_preparation": (0.65, 0.35),
}

# Levels added after the generator was written, each drawn as a share of an older level's
# students (issue 16: some_high_school, a third of what was high_school). The older level is
# drawn with their shares together and then split with a random stream of its own, so that for a
# given seed every other value is the same as before the level existed, and figures measured on
# the generator's data move only by what the new level's own students change.
SPLIT_LEVELS: Final[dict[str, tuple[str, str]]] = {
    "parental_education": ("some_high_school", "high_school"),
}
_SPLIT_STREAM: Final = 16


def _categorical_features(rng: np.random.Generator, n: int, seed: int) -> dict[str, np.ndarray]:
    drawn = {}
    for column, levels in CATEGORIES.items():
        shares = dict(zip(levels, CATEGORY_SHARES[column], strict=True))
        split = SPLIT_LEVELS.get(column)
        if split is not None:
            new, old = split
            part = shares[new] / (shares[new] + shares[old])
            shares[old] += shares.pop(new)
        values = rng.choice(np.array(list(shares), dtype=object), size=n, p=list(shares.values()))
        if split is not None:
            chosen = np.random.default_rng((seed, _SPLIT_STREAM)).random(n) < part
            values[chosen & (values == old)] = new
        drawn[column] = values
    return drawn


def _numeric_features(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "age": rng.integers(14, 20, n).astype(float),
        "attendance_percentage": np.round(100.0 * rng.beta(8.0, 1.5, n), 1),
        "study_hours_per_week": np.round(np.clip(rng.gamma(3.0, 4.0, n), 0.0, 40.0), 1),
        "previous_gpa": np.round(np.clip(rng.normal(2.9, 0.6, n), 0.0, 4.0), 2),
        "assignments_completed": (rng.random(n) < 0.7).astype(float),
    }


def parse_group(spec: str) -> tuple[str, str]:
    """ "attribute=level" (e.g. "lunch_program=free_or_reduced"), checked against CATEGORIES."""
    attribute, _, level = spec.partition("=")
    if attribute not in CATEGORIES or level not in CATEGORIES[attribute]:
        choices = ", ".join(f"{a}=<{'|'.join(levels)}>" for a, levels in CATEGORIES.items())
        raise ValueError(f"unfair group {spec!r} is not attribute=level, one of: {choices}")
    return attribute, level


def generate(n_rows: int, seed: int, unfair_group: str | None = None) -> pd.DataFrame:
    """Return `n_rows` students: `student_id`, the FEATURE_COLUMNS and `final_score`.

    The same (n_rows, seed, unfair_group) always gives the same frame. Numbers are float64
    (NaN when missing); categories are object columns of the names in CATEGORIES (None when
    missing). `unfair_group` plants unfairness for one group (see the module's docstring).
    """
    if n_rows < 1:
        raise ValueError(f"n_rows must be at least 1, got {n_rows}")
    unfair = parse_group(unfair_group) if unfair_group is not None else None
    rng = np.random.default_rng(seed)
    numeric = _numeric_features(rng, n_rows)
    categorical = _categorical_features(rng, n_rows, seed)

    score = np.full(n_rows, BASE_SCORE) + rng.normal(0.0, NOISE_SD, n_rows)
    for column, effect in NUMERIC_EFFECTS.items():
        score += effect * (numeric[column] - NUMERIC_CENTRES[column])
    for column, effects in CATEGORY_EFFECTS.items():
        score += np.array([effects[value] for value in categorical[column]])

    frame = pd.DataFrame({"student_id": [f"syn-{i:06d}" for i in range(1, n_rows + 1)]})
    for column in FEATURE_COLUMNS:
        missing = rng.random(n_rows) < MISSING_RATE
        if column in numeric:
            frame[column] = np.where(missing, np.nan, numeric[column])
        else:
            values = categorical[column].copy()
            values[missing] = None
            frame[column] = pd.Series(values, dtype=object)
    if unfair is not None:
        # Drawn last, so that every other value is what the calm generator gives.
        attribute, level = unfair
        extra = rng.normal(0.0, UNFAIR_NOISE_SD, n_rows)
        score += np.where(categorical[attribute] == level, extra, 0.0)
    frame[TARGET_SCORE] = np.round(np.clip(score, *SCORE_RANGE), 1)
    return frame
