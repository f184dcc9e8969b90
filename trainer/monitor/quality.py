"""Live quality of one model version: its recorded predictions against the recorded outcomes.

The same measures as the trainer's held-out figures (trainer.evaluate), so they compare: score
RMSE of `predicted_final_score` against the actual final score, ROC-AUC of `pass_probability`
against passing (the final score reaching the pass mark the prediction was made with), and
calibration (the expected calibration error over ten equal-width bins, and the bins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import mean_squared_error, roc_auc_score

from trainer.evaluate import CalibrationBin, calibration_table, expected_calibration_error

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LiveQuality:
    rows: int  # predictions with an outcome
    passed: int  # of which passed
    score_rmse: float
    pass_roc_auc: float | None  # None when every outcome is a pass, or every one a fail
    pass_ece: float
    calibration: tuple[CalibrationBin, ...]
    # The version's figures on its own test split at training time (metadata.json `metrics`).
    held_out: Mapping[str, float] | None = None
    # Its calibration bins on that split (metadata.json `calibration`), drawn beside the live ones.
    held_out_calibration: tuple[CalibrationBin, ...] = ()

    @property
    def rmse_ratio(self) -> float | None:
        """Live RMSE over held-out RMSE: 1.0 means as good as promised, 1.5 half as bad again."""
        held = (self.held_out or {}).get("score_rmse")
        return self.score_rmse / held if held else None

    @property
    def auc_drop(self) -> float | None:
        """Held-out ROC-AUC minus live ROC-AUC: positive when live ranking is worse."""
        held = (self.held_out or {}).get("pass_roc_auc")
        if held is None or self.pass_roc_auc is None:
            return None
        return held - self.pass_roc_auc


def live_quality(
    actual: npt.ArrayLike,
    predicted: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    pass_marks: npt.ArrayLike,
    held_out: Mapping[str, float] | None = None,
    held_out_calibration: tuple[CalibrationBin, ...] = (),
) -> LiveQuality:
    """Figures over aligned arrays, one entry per prediction with an outcome (at least one)."""
    scores = np.asarray(actual, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("live quality needs at least one prediction with an outcome")
    guessed = np.asarray(predicted, dtype=np.float64)
    chances = np.asarray(probabilities, dtype=np.float64)
    passed = (scores >= np.asarray(pass_marks, dtype=np.float64)).astype(int)
    both_classes = 0 < passed.sum() < passed.size
    return LiveQuality(
        rows=int(scores.size),
        passed=int(passed.sum()),
        score_rmse=float(np.sqrt(mean_squared_error(scores, guessed))),
        pass_roc_auc=float(roc_auc_score(passed, chances)) if both_classes else None,
        pass_ece=float(expected_calibration_error(passed, chances)),
        calibration=tuple(calibration_table(passed, chances)),
        held_out=held_out,
        held_out_calibration=held_out_calibration,
    )
