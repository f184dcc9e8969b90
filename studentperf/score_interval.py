"""The range around a predicted final score, and the calibration map of the pass probability:
what the trainer fits and compiles into the artifact, and the one definition of how both are
applied, so that the trainer's figures and the served answers come from the same arithmetic.

Neither needs anything beyond numpy at serving time: the interval is one half-width in points
(split-conformal, see trainer.conformal) and the calibration map is a list of knots that
`np.interp` follows (an isotonic fit, see trainer.calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from studentperf.features import SCORE_RANGE

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ScoreInterval:
    """`coverage` of students' final scores lie within `half_width` points of the predicted
    score (clipped to SCORE_RANGE, which never leaves a real score out)."""

    half_width: float
    coverage: float

    def bounds(self, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Low and high end of each (served, clipped) score's interval."""
        served = np.asarray(scores, dtype=np.float64)
        low, high = SCORE_RANGE
        return (
            np.clip(served - self.half_width, low, high),
            np.clip(served + self.half_width, low, high),
        )

    def bounds_of(self, scores: Sequence[float]) -> tuple[list[float], list[float]]:
        """`bounds` as lists of plain floats, computed without numpy: the same float64
        subtraction and clip per score, so the same values bit for bit (NaN included). The
        service answers a few scores at a time, on every micro-batch: there numpy's per-call
        overhead (arrays, clip's dispatch, tolist) cost several times the arithmetic."""
        low, high = SCORE_RANGE
        half_width = self.half_width
        return (
            [min(max(score - half_width, low), high) for score in scores],
            [min(max(score + half_width, low), high) for score in scores],
        )

    def as_dict(self) -> dict[str, float]:
        return {"half_width": self.half_width, "coverage": self.coverage}

    @classmethod
    def from_dict(cls, found: object) -> ScoreInterval | None:
        """The interval an artifact stored, or None for an artifact from before intervals."""
        if not isinstance(found, dict):
            return None
        return cls(half_width=float(found["half_width"]), coverage=float(found["coverage"]))


@dataclass(frozen=True)
class PassCalibration:
    """A monotone map from the classifier's pass probability to a calibrated one: straight
    lines between the knots, flat beyond the first and the last."""

    knots_in: tuple[float, ...]
    knots_out: tuple[float, ...]

    def apply(self, probabilities: npt.ArrayLike) -> FloatArray:
        given = np.asarray(probabilities, dtype=np.float64)
        return np.asarray(np.interp(given, self.knots_in, self.knots_out), dtype=np.float64)

    def as_dict(self) -> dict[str, list[float]]:
        return {"knots_in": list(self.knots_in), "knots_out": list(self.knots_out)}

    @classmethod
    def from_dict(cls, found: object) -> PassCalibration | None:
        if not isinstance(found, dict):
            return None
        return cls(
            knots_in=tuple(float(x) for x in found["knots_in"]),
            knots_out=tuple(float(y) for y in found["knots_out"]),
        )
