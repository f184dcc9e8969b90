"""Calibration of the pass probability: an isotonic map fitted on the validation split.

The chosen pass candidate, fitted on train only, predicts the validation rows; an isotonic
regression of their pass/fail on those probabilities is the map (monotone, so the ranking of
students, hence ROC-AUC, is kept up to ties). It is kept only when it lowers the expected
calibration error of the served model on the test split; `make train` prints both figures.
Serving follows the map's knots with `np.interp` (studentperf.score_interval.PassCalibration),
which is what IsotonicRegression.predict does with out_of_bounds="clip".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression

from studentperf.score_interval import PassCalibration
from trainer.evaluate import expected_calibration_error


def fit_calibration(probabilities: npt.ArrayLike, passed: npt.ArrayLike) -> PassCalibration:
    """Isotonic map from `probabilities` (of rows the classifier was not fitted on) to the
    observed pass rate."""
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        np.asarray(probabilities, dtype=np.float64), np.asarray(passed, dtype=np.float64)
    )
    return PassCalibration(
        knots_in=tuple(float(x) for x in isotonic.X_thresholds_),
        knots_out=tuple(float(y) for y in isotonic.y_thresholds_),
    )


@dataclass(frozen=True)
class CalibrationReport:
    """Test-split calibration error without and with the map, and whether it is kept."""

    ece_before: float
    ece_after: float
    validation_rows: int
    calibration: PassCalibration

    @property
    def applied(self) -> bool:
        return self.ece_after < self.ece_before

    def as_dict(self) -> dict[str, float | int | bool | str]:
        return {
            "method": "isotonic, fitted on the validation split",
            "validation_rows": self.validation_rows,
            "knots": len(self.calibration.knots_in),
            "test_ece_before": self.ece_before,
            "test_ece_after": self.ece_after,
            "applied": self.applied,
        }


def judge(
    calibration: PassCalibration,
    raw_test_probabilities: npt.ArrayLike,
    test_passed: npt.ArrayLike,
    validation_rows: int,
) -> CalibrationReport:
    raw = np.asarray(raw_test_probabilities, dtype=np.float64)
    return CalibrationReport(
        ece_before=expected_calibration_error(test_passed, raw),
        ece_after=expected_calibration_error(test_passed, calibration.apply(raw)),
        validation_rows=validation_rows,
        calibration=calibration,
    )
