"""Live quality per group of students: one version's predictions against their recorded outcomes,
per level of gender, lunch program and parental education (trainer.group_quality), compared with
the per-group figures the version was trained with (its metadata.json `group_quality`).

The group of a prediction is read from the inputs it was made with (the stored profile it points
at), as the model saw them. A gap alerts by the promotion gate's own rule
(trainer.promote.gap_widenings): a live gap whose bootstrap interval's low end exceeds the
version's training-time gap by more than the figure's threshold. So a gap within noise never
alerts, nor does a gap the version already had when it was promoted, nor a gap of a figure its
training-time record predates (`not_compared`: interval coverage, for a version trained before
it was measured per group). Groups of fewer than MIN_GROUP_ROWS outcomes are shown, marked too
small, and take no part in the gaps.

Interval coverage per group counts the interval each prediction was answered with
(predictions.score_interval_low/high) against its outcome; predictions recorded without one
(NULL: a version from before intervals) are left out of it, and with none it is undefined.

The figures and their bootstrap cost grow with the rows (Fairlearn's MetricFrame alone takes
seconds per 10,000), so at most `max_rows` outcomes are used: above that, a seeded sample of
them, which the interval then reflects (it widens; it never claims more than the sample shows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from studentperf.group_quality_record import GroupQuality
from trainer.group_quality import group_quality
from trainer.promote import WidenedGap, gap_widenings, not_compared

# Enough for the thresholds: a group of 4 % still has 400 outcomes, whose RMSE is known to
# well within the 2 points a gap may widen by; and a version's bootstrap stays seconds.
MAX_ROWS: Final = 10_000
# A smaller cap would leave most groups too small to judge by design.
MIN_SAMPLE: Final = 1_000
# Fixed, so that the same window gives the same sample and the same intervals on every run.
SEED: Final = 16


@dataclass(frozen=True)
class LiveGroups:
    live: GroupQuality  # over `live.rows` outcomes, the sample when there were more
    outcomes: int  # predictions with an outcome in the window
    # The version's figures on its test split at training time (None: not recorded).
    recorded: GroupQuality | None
    widened: tuple[WidenedGap, ...]  # empty when `recorded` is None

    @property
    def sampled(self) -> bool:
        return self.live.rows < self.outcomes

    @property
    def not_compared(self) -> tuple[str, ...]:
        """Figures with a live gap that the training-time record predates."""
        return () if self.recorded is None else not_compared(self.live, self.recorded)


def live_groups(
    labelled: pd.DataFrame,
    *,
    recorded: GroupQuality | None,
    thresholds: Mapping[str, float],
    max_rows: int = MAX_ROWS,
) -> LiveGroups:
    """`labelled`: predictions with an outcome, with the group attributes as stored (None: not
    given), final_score, predicted_final_score, pass_probability and pass_mark, and when read
    from the database score_interval_low, score_interval_high and interval_coverage (NaN: the
    prediction had no interval)."""
    if labelled.empty:
        raise ValueError("per-group quality needs at least one prediction with an outcome")
    rows = labelled
    if len(rows) > max_rows:
        pick = np.sort(np.random.default_rng(SEED).choice(len(rows), max_rows, replace=False))
        rows = rows.iloc[pick]
    # One version predicts with one pass mark; the most frequent one, should a window mix them.
    pass_mark = float(rows["pass_mark"].mode().iloc[0])
    low, high, stated = _served_intervals(rows)
    live = group_quality(
        rows.reset_index(drop=True),
        rows["final_score"].to_numpy(dtype=float),
        rows["predicted_final_score"].to_numpy(dtype=float),
        rows["pass_probability"].to_numpy(dtype=float),
        pass_mark=pass_mark,
        seed=SEED,
        interval_low=low,
        interval_high=high,
        stated_coverage=stated,
    )
    widened = () if recorded is None else tuple(gap_widenings(live, recorded, thresholds))
    return LiveGroups(live, len(labelled), recorded, widened)


def _served_intervals(
    rows: pd.DataFrame,
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None, float | None]:
    """The interval ends as recorded (None: the frame has no such columns) and the stated
    coverage: one version states one level; should rows disagree, the most demanding one, as
    trainer.monitor.coverage judges it (None: no row states one)."""
    if "score_interval_low" not in rows:
        return None, None, None
    levels = rows["interval_coverage"].dropna()
    return (
        rows["score_interval_low"].to_numpy(dtype=float),
        rows["score_interval_high"].to_numpy(dtype=float),
        float(levels.max()) if len(levels) else None,
    )


def recorded_groups(found: object) -> GroupQuality | None:
    """A version's recorded `group_quality` (metadata.json or model_versions), None when absent
    or not one."""
    if not isinstance(found, Mapping):
        return None
    try:
        return GroupQuality.from_dict(found)
    except (KeyError, TypeError, ValueError):
        return None
