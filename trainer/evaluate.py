"""Held-out metrics for a trained model and for the naive baseline it has to beat.

The baseline knows only the rows the model was fitted on: it predicts their mean score for
everyone and their pass share as everyone's pass probability (so it classifies everyone as the
majority class, and its ROC-AUC is 0.5).

Calibration: `pass_ece` is the expected calibration error over ten equal-width bins of the
predicted probability (the row-weighted mean gap between the predicted probability and the
observed pass rate in each bin); `calibration_table` gives the bins themselves.

Every evaluation also holds the model's quality per group of students (trainer.group_quality):
the same figures per gender, lunch program and parental education, and the gaps between groups,
among them how often each group's scores fall inside the score interval the model serves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from studentperf.group_quality_record import GroupQuality
from studentperf.model_artifact import StudentModel
from trainer.group_quality import model_group_quality
from trainer.pipeline import pass_labels

FloatArray = npt.NDArray[np.float64]
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class Metrics:
    score_rmse: float
    score_mae: float
    score_r2: float
    pass_roc_auc: float
    pass_accuracy: float
    pass_f1: float
    pass_brier: float
    pass_ece: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    rows: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True)
class Evaluation:
    model: Metrics
    baseline: Metrics
    calibration: tuple[CalibrationBin, ...]
    groups: GroupQuality  # the model's figures per group of students, and the gaps


def calibration_table(passed: npt.ArrayLike, probabilities: FloatArray) -> list[CalibrationBin]:
    """The non-empty bins of predicted probability, with the observed pass rate in each."""
    outcome = np.asarray(passed, dtype=float)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    # The last bin is closed on the right, so a probability of exactly 1 has a bin.
    index = np.clip(
        np.searchsorted(edges, probabilities, side="right") - 1, 0, CALIBRATION_BINS - 1
    )
    table = []
    for b in range(CALIBRATION_BINS):
        inside = index == b
        if inside.any():
            table.append(
                CalibrationBin(
                    low=float(edges[b]),
                    high=float(edges[b + 1]),
                    rows=int(inside.sum()),
                    mean_predicted=float(probabilities[inside].mean()),
                    observed_rate=float(outcome[inside].mean()),
                )
            )
    return table


def expected_calibration_error(passed: npt.ArrayLike, probabilities: FloatArray) -> float:
    table = calibration_table(passed, probabilities)
    total = sum(b.rows for b in table)
    return sum(b.rows * abs(b.mean_predicted - b.observed_rate) for b in table) / total


def metrics(
    scores: FloatArray, predicted: FloatArray, probabilities: FloatArray, pass_mark: float
) -> Metrics:
    """Score metrics of `predicted` and pass metrics of `probabilities` against `scores`."""
    passed = pass_labels(scores, pass_mark)
    decided = (probabilities >= 0.5).astype(int)
    return Metrics(
        score_rmse=float(np.sqrt(mean_squared_error(scores, predicted))),
        score_mae=float(mean_absolute_error(scores, predicted)),
        score_r2=float(r2_score(scores, predicted)),
        pass_roc_auc=float(roc_auc_score(passed, probabilities)),
        pass_accuracy=float(accuracy_score(passed, decided)),
        pass_f1=float(f1_score(passed, decided, zero_division=0.0)),
        pass_brier=float(brier_score_loss(passed, probabilities)),
        pass_ece=float(expected_calibration_error(passed, probabilities)),
    )


def model_metrics(model: StudentModel, test: Any, test_scores: FloatArray) -> Metrics:
    return metrics(
        test_scores, model.predict_scores(test), model.pass_probabilities(test), model.pass_mark
    )


def evaluate(
    model: StudentModel, test: Any, test_scores: FloatArray, fit_scores: FloatArray, *, seed: int
) -> Evaluation:
    """Metrics on the held-out `test` frame for the model and for the baseline; `seed` seeds
    the bootstrap of the gaps between groups."""
    n = len(test_scores)
    pass_share = float(pass_labels(fit_scores, model.pass_mark).mean())
    baseline = metrics(
        test_scores,
        np.full(n, float(np.mean(fit_scores))),
        np.full(n, pass_share),
        model.pass_mark,
    )
    probabilities = model.pass_probabilities(test)
    predicted = model.predict_scores(test)
    found = metrics(test_scores, predicted, probabilities, model.pass_mark)
    calibration = calibration_table(pass_labels(test_scores, model.pass_mark), probabilities)
    groups = model_group_quality(model, test, test_scores, seed)
    return Evaluation(model=found, baseline=baseline, calibration=tuple(calibration), groups=groups)
