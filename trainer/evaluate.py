"""Held-out metrics for a trained model and for the naive baseline it has to beat.

The baseline knows only the training set: it predicts the mean training score for everyone and
the training pass share as everyone's pass probability (so it classifies everyone as the
majority class, and its ROC-AUC is 0.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from studentperf.model_artifact import StudentModel
from trainer.pipeline import pass_labels

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Metrics:
    score_rmse: float
    score_mae: float
    score_r2: float
    pass_roc_auc: float
    pass_accuracy: float
    pass_brier: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    model: Metrics
    baseline: Metrics


def metrics(
    scores: FloatArray, predicted: FloatArray, probabilities: FloatArray, pass_mark: float
) -> Metrics:
    """Score metrics of `predicted` and pass metrics of `probabilities` against `scores`."""
    passed = pass_labels(scores, pass_mark)
    return Metrics(
        score_rmse=float(np.sqrt(mean_squared_error(scores, predicted))),
        score_mae=float(mean_absolute_error(scores, predicted)),
        score_r2=float(r2_score(scores, predicted)),
        pass_roc_auc=float(roc_auc_score(passed, probabilities)),
        pass_accuracy=float(accuracy_score(passed, probabilities >= 0.5)),
        pass_brier=float(brier_score_loss(passed, probabilities)),
    )


def evaluate(
    model: StudentModel, test: Any, test_scores: FloatArray, train_scores: FloatArray
) -> Evaluation:
    """Metrics on the held-out `test` frame for the model and for the baseline."""
    n = len(test_scores)
    pass_share = float(pass_labels(train_scores, model.pass_mark).mean())
    baseline = metrics(
        test_scores,
        np.full(n, float(np.mean(train_scores))),
        np.full(n, pass_share),
        model.pass_mark,
    )
    found = metrics(
        test_scores, model.predict_scores(test), model.pass_probabilities(test), model.pass_mark
    )
    return Evaluation(model=found, baseline=baseline)
