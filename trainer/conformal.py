"""Split-conformal interval for the final score, fitted with MAPIE on the validation split.

The chosen score candidate, fitted on train only, predicts the validation rows it never saw;
the absolute errors of those served (clipped) scores are the conformity scores, and MAPIE's
`SplitConformalRegressor` takes their ceil((n + 1) * coverage)-th smallest as the half-width,
which covers a new student's score with probability at least `coverage` when students are
exchangeable. The served model is the same candidate refitted on train + validation, so its
errors are, if anything, smaller: the half-width carries over conservatively, and the test
split, never used for fitting, checks the coverage it reaches (`make train` prints it).

What serving needs is one number, compiled into the artifact (studentperf.score_interval), so
serving never imports MAPIE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from mapie.regression import SplitConformalRegressor
from sklearn.base import BaseEstimator, RegressorMixin

from studentperf.features import SCORE_RANGE
from studentperf.score_interval import ScoreInterval

DEFAULT_COVERAGE = 0.8
COVERAGE_VARIABLE = "STUDENTPERF_INTERVAL_COVERAGE"


class _ServedScores(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """A fitted pipeline's scores clipped to SCORE_RANGE, as served, for MAPIE (prefit)."""

    def __init__(self, pipeline: Any = None) -> None:
        self.pipeline = pipeline

    def fit(self, features: Any, scores: Any = None) -> _ServedScores:
        self.fitted_ = True  # the pipeline came fitted; MAPIE checks for a trailing-_ attribute
        return self

    def predict(self, features: Any) -> npt.NDArray[np.float64]:
        return np.clip(np.asarray(self.pipeline.predict(features), dtype=np.float64), *SCORE_RANGE)


def fit_interval(
    pipeline: Any, features: Any, scores: npt.ArrayLike, *, coverage: float
) -> ScoreInterval:
    """The half-width that covers `coverage` of the rows (`features`, `scores`) conformally;
    `pipeline` must not have been fitted on them. Rows too few for that level
    (ceil((n + 1) * coverage) > n) give the whole score range."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be between 0 and 1, not {coverage}")
    found = np.asarray(scores, dtype=np.float64)
    low, high = SCORE_RANGE
    if np.ceil((len(found) + 1) * coverage) > len(found):
        return ScoreInterval(half_width=float(high - low), coverage=coverage)
    conformal = SplitConformalRegressor(
        _ServedScores(pipeline).fit(features),
        confidence_level=coverage,
        conformity_score="absolute",
        prefit=True,
    ).conformalize(features, found)
    # The absolute score gives every row the same half-width: read it off the first row.
    points, bounds = conformal.predict_interval(features[:1])
    return ScoreInterval(half_width=float(bounds[0, 1, 0] - points[0]), coverage=coverage)


@dataclass(frozen=True)
class IntervalReport:
    """The interval and how it did on the test split."""

    interval: ScoreInterval
    validation_rows: int
    test_rows: int
    test_coverage: float  # share of test scores inside their interval
    test_mean_width: float  # after clipping to SCORE_RANGE

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            **self.interval.as_dict(),
            "method": "split-conformal (MAPIE SplitConformalRegressor, absolute residuals of "
            "the candidate fitted on train, on the validation split)",
            "validation_rows": self.validation_rows,
            "test_rows": self.test_rows,
            "test_coverage": self.test_coverage,
            "test_mean_width": self.test_mean_width,
        }


def coverage_on(
    interval: ScoreInterval, predicted: npt.ArrayLike, actual: npt.ArrayLike
) -> tuple[float, float]:
    """Share of `actual` scores inside the intervals of `predicted`, and their mean width."""
    low, high = interval.bounds(predicted)
    truth = np.asarray(actual, dtype=np.float64)
    inside = (truth >= low) & (truth <= high)
    return float(inside.mean()), float((high - low).mean())
