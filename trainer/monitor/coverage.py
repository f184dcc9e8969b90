"""Live coverage of the score intervals: how many recorded outcomes fell inside the range their
prediction was answered with, against the coverage the version states.

Only predictions that carry an interval count (a version trained before intervals has none).
Coverage is a share of a binomial count, noisy on few outcomes (at 80 % and 100 outcomes, one
standard deviation is 4 points), so an alert needs both: the live share more than `drop` below
the stated level, and a one-sided binomial test at `pvalue` saying chance alone would rarely
fall that low.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import binomtest


@dataclass(frozen=True)
class LiveCoverage:
    rows: int  # predictions with an interval and an outcome
    covered: int  # of which the outcome was inside the interval
    stated: float  # the version's interval_coverage

    @property
    def share(self) -> float:
        return self.covered / self.rows

    @property
    def pvalue(self) -> float:
        """Chance of a share this low or lower if the true coverage were `stated`."""
        return float(binomtest(self.covered, self.rows, self.stated, alternative="less").pvalue)

    def falls_short(self, drop: float, pvalue: float) -> bool:
        return self.share < self.stated - drop and self.pvalue < pvalue

    def describe(self) -> str:
        return (
            f"live interval coverage {self.share:.1%} of {self.rows} outcomes "
            f"(stated {self.stated:.0%}, binomial p {self.pvalue:.2g})"
        )


def live_coverage(
    actual: npt.ArrayLike, low: npt.ArrayLike, high: npt.ArrayLike, stated: npt.ArrayLike
) -> LiveCoverage | None:
    """Over aligned arrays of predictions with an outcome; rows without an interval (NaN) are
    left out. None when no row has one."""
    scores = np.asarray(actual, dtype=np.float64)
    lows, highs = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    levels = np.asarray(stated, dtype=np.float64)
    has = ~np.isnan(lows) & ~np.isnan(highs) & ~np.isnan(levels)
    if not has.any():
        return None
    inside = (scores[has] >= lows[has]) & (scores[has] <= highs[has])
    # One version states one level; should rows disagree, the most demanding one is judged.
    return LiveCoverage(
        rows=int(has.sum()), covered=int(inside.sum()), stated=float(levels[has].max())
    )
