"""Per-group quality: does the model serve some groups of students worse than others?

Groups are the levels of three inputs: gender, lunch program (a proxy for family income) and
parental education (`GROUP_ATTRIBUTES`). Race and ethnicity are never among them: they are not
an input of the model and are never stored, so there is nothing to group by (README, "Quality
per group of students"). Students whose attribute was not given form a "not_given" row, shown
but left out of the gaps: it mixes every group.

For each group, on rows with known outcomes (`FIGURES`):

- `score_rmse`, `score_mean_error`: the predicted final score's RMSE and mean error (predicted
  minus actual: positive means the group is over-predicted);
- `pass_roc_auc`, `pass_ece`: how well P(pass) ranks and how well it is calibrated (expected
  calibration error over ten equal-width bins, as trainer.evaluate computes it);
- `false_negative_rate`: of the students at risk (final score below the pass mark), the share
  the model called safe (P(pass) >= 0.5); `false_positive_rate`: of those who passed, the share
  flagged at risk; `flagged_rate`: the share flagged at risk (P(pass) < 0.5);
- `interval_coverage`: of the students whose prediction carried a score interval, the share
  whose final score lies within it (ends included). The interval has one half-width for every
  student and states one coverage (`GroupQuality.stated_coverage`); a group whose scores
  spread wider than the others' is covered less often than stated, and this says by how much.
  It needs the intervals as given (`interval_low`, `interval_high`, NaN where a prediction
  had none: an artifact from before intervals, a prediction recorded without them); rows
  without one are left out of it, never given one.

A group with fewer than `MIN_GROUP_ROWS` rows is too small to judge: its figures are shown but
it takes no part in the gaps. A figure that conditions on a class (ROC-AUC on both, the false
negative rate on the students at risk, the false positive rate on those who passed) is left
undefined (None) for a group with fewer than `MIN_CLASS_ROWS` students of that class; so is
`interval_coverage` for a group with fewer than `MIN_CLASS_ROWS` students with an interval.

The gap of a figure is the highest group's value minus the lowest's among the judged groups.
Its interval is a seeded percentile bootstrap of that difference (each of the two groups'
rows resampled on their own, `RESAMPLES` times; a group above `BOOTSTRAP_ROWS` rows by the
m-out-of-n bootstrap, see `_deviations`) at a Bonferroni-widened level: with k judged groups
there are k(k-1)/2 pairs, and the largest difference of many is large by chance, so the
interval is at 1 - 0.05 / pairs. A gap whose interval reaches 0 is within noise
(`Gap.beyond_noise` is false). The level holds per attribute and figure: over a whole table
of 24 gaps, about one is called real by chance on data without any.

The per-group figures come from Fairlearn's MetricFrame; the bootstrap is ours, because
MetricFrame's resamples the whole frame and reports the spread of max - min across groups,
which is above zero by construction and so cannot say that a gap is within noise. Both use the
figure functions below, each given one `Rows`, whose arrays may be 1-D or 2-D (one row per
resample). Nothing here knows about models or files: `make monitor` can pass recorded
predictions and outcomes to `group_quality` just as training passes the test split.

About 450 lines, kept whole: the figure functions, the bootstrap that judges their gaps and the
table that prints them are one computation; the result types and their JSON form are in
studentperf.group_quality_record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from fairlearn.metrics import MetricFrame
from scipy.stats import rankdata

from studentperf.features import CATEGORIES
from studentperf.group_quality_record import (
    MIN_CLASS_ROWS,
    MIN_GROUP_ROWS,
    RESAMPLES,
    AttributeQuality,
    Gap,
    GroupFigures,
    GroupQuality,
)

FloatArray = npt.NDArray[np.float64]

GROUP_ATTRIBUTES: Final = ("gender", "lunch_program", "parental_education")
NOT_GIVEN: Final = "not_given"
BOOTSTRAP_ROWS: Final = 2000  # larger groups: the m-out-of-n bootstrap (see _deviations)
BOOTSTRAP_CELLS: Final = 1_000_000  # resampled rows held in memory at once
FAMILY_ERROR: Final = 0.05  # the chance that any of an attribute's pairs is called by noise
CALIBRATION_BINS: Final = 10
FIGURES: Final = (
    "score_rmse",
    "score_mean_error",
    "pass_roc_auc",
    "pass_ece",
    "false_negative_rate",
    "false_positive_rate",
    "flagged_rate",
    "interval_coverage",
)

if not set(GROUP_ATTRIBUTES) <= set(CATEGORIES):
    raise ImportError("every group attribute must be a categorical feature")


# --- the figures: each reads what it is about from one group's rows -------------------------


@dataclass(frozen=True)
class Rows:
    """Aligned per-student arrays along the last axis (1-D: one group's students; 2-D: one
    resample of them per row), and the pass mark that splits them into passed and at risk."""

    actual: FloatArray  # final scores
    predicted: FloatArray  # predicted final scores
    probability: FloatArray  # P(pass)
    low: FloatArray  # the served interval's ends; NaN where a prediction had none
    high: FloatArray
    pass_mark: float

    @property
    def passed(self) -> Any:
        return self.actual >= self.pass_mark

    def of(self, chosen: Any) -> Rows:
        """The rows `chosen` (a mask, or an array of row numbers of any shape) picks."""
        return Rows(
            self.actual[chosen],
            self.predicted[chosen],
            self.probability[chosen],
            self.low[chosen],
            self.high[chosen],
            self.pass_mark,
        )


def score_rmse(rows: Rows) -> Any:
    return np.sqrt(np.mean((rows.predicted - rows.actual) ** 2, axis=-1))


def score_mean_error(rows: Rows) -> Any:
    return np.mean(rows.predicted - rows.actual, axis=-1)


def pass_roc_auc(rows: Rows) -> Any:
    """Mann-Whitney: the chance that a random pass gets a higher P(pass) than a random fail
    (ties count half), which is the area under the ROC curve."""
    passed = rows.passed
    n_pass = passed.sum(axis=-1)
    n_fail = passed.shape[-1] - n_pass
    ranks = rankdata(rows.probability, axis=-1)
    rank_sum = np.where(passed, ranks, 0.0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pass * (n_pass + 1) / 2) / (n_pass * n_fail)
    return np.where(np.minimum(n_pass, n_fail) >= MIN_CLASS_ROWS, auc, np.nan)


def pass_ece(rows: Rows) -> Any:
    """Sum over bins of |sum of P(pass) - number passed|, over the rows: the row-weighted mean
    gap between predicted and observed pass rate per bin."""
    probability, passed = rows.probability, rows.passed.astype(float)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    index = np.clip(np.searchsorted(edges, probability, side="right") - 1, 0, CALIBRATION_BINS - 1)
    # One bin number per (leading row, bin), so one bincount sums every row's bins at once.
    leading = np.arange(index.size // index.shape[-1]).reshape((*index.shape[:-1], 1))
    flat = (leading * CALIBRATION_BINS + index).ravel()
    sums = np.bincount(
        flat, weights=(probability - passed).ravel(), minlength=leading.size * CALIBRATION_BINS
    )
    gaps = np.abs(sums.reshape((*index.shape[:-1], CALIBRATION_BINS)))
    return gaps.sum(axis=-1) / rows.actual.shape[-1]


def _share(where: Any, of: Any) -> Any:
    count = of.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = (where & of).sum(axis=-1) / count
    return np.where(count >= MIN_CLASS_ROWS, share, np.nan)


def false_negative_rate(rows: Rows) -> Any:
    return _share(rows.probability >= 0.5, rows.actual < rows.pass_mark)


def false_positive_rate(rows: Rows) -> Any:
    return _share(rows.probability < 0.5, rows.passed)


def flagged_rate(rows: Rows) -> Any:
    return np.mean(rows.probability < 0.5, axis=-1)


def interval_coverage(rows: Rows) -> Any:
    """Among the rows with an interval (both ends known), the share inside it, ends included
    as trainer.conformal.coverage_on and the monitor count it."""
    served = ~np.isnan(rows.low) & ~np.isnan(rows.high)
    return _share((rows.actual >= rows.low) & (rows.actual <= rows.high), served)


Figure = Callable[[Rows], Any]
FIGURE_FUNCTIONS: Final[dict[str, Figure]] = {
    "score_rmse": score_rmse,
    "score_mean_error": score_mean_error,
    "pass_roc_auc": pass_roc_auc,
    "pass_ece": pass_ece,
    "false_negative_rate": false_negative_rate,
    "false_positive_rate": false_positive_rate,
    "flagged_rate": flagged_rate,
    "interval_coverage": interval_coverage,
}
assert tuple(FIGURE_FUNCTIONS) == FIGURES


# --- computing them -------------------------------------------------------------------------


def group_labels(values: pd.Series) -> npt.NDArray[np.object_]:
    """An attribute's values as group names, "not_given" where missing."""
    return np.array([NOT_GIVEN if v is None or v != v else str(v) for v in values], dtype=object)


def _by_group(labels: npt.NDArray[np.object_], rows: Rows) -> pd.DataFrame:
    def metric(figure: Figure) -> Callable[..., float]:
        def call(y_true: Any, y_pred: Any, *, probability: Any, low: Any, high: Any) -> float:
            given = (y_true, y_pred, probability, low, high)
            actual, predicted, p, lows, highs = (np.asarray(v, dtype=float) for v in given)
            return float(figure(Rows(actual, predicted, p, lows, highs, rows.pass_mark)))

        return functools.wraps(figure)(call)

    frame = MetricFrame(
        metrics={name: metric(f) for name, f in FIGURE_FUNCTIONS.items()},
        y_true=rows.actual,
        y_pred=rows.predicted,
        sensitive_features=pd.Series(labels, name="group"),
        sample_params={
            name: {"probability": rows.probability, "low": rows.low, "high": rows.high}
            for name in FIGURES
        },
    )
    by_group: pd.DataFrame = frame.by_group
    return by_group


def _deviations(
    group: GroupFigures,
    rows: Rows,
    rng: np.random.Generator,
    resamples: int,
) -> dict[str, FloatArray]:
    """Per figure, how far each bootstrap resample of the group's rows lands from the group's
    figure. A group larger than BOOTSTRAP_ROWS is resampled BOOTSTRAP_ROWS rows at a time and
    the deviations shrunk by sqrt(BOOTSTRAP_ROWS / rows) (the m-out-of-n bootstrap): figures
    that are means spread as 1/sqrt(rows), and a test split of a million rows stays seconds."""
    n = len(rows.actual)
    m = min(n, BOOTSTRAP_ROWS)
    chunk = max(1, BOOTSTRAP_CELLS // m)
    found: dict[str, list[Any]] = {name: [] for name in FIGURES}
    for start in range(0, resamples, chunk):
        drawn = rows.of(rng.integers(0, n, size=(min(chunk, resamples - start), m)))
        for name, figure in FIGURE_FUNCTIONS.items():
            found[name].append(figure(drawn))
    shrink = np.sqrt(m / n)
    deviations = {}
    for name, values in found.items():
        point = group.figures[name]
        centre = np.nan if point is None else point
        deviations[name] = (np.concatenate(values).astype(float) - centre) * shrink
    return deviations


def _attribute_quality(
    attribute: str,
    labels: npt.NDArray[np.object_],
    rows: Rows,
    rng: np.random.Generator,
    resamples: int,
) -> AttributeQuality:
    table = _by_group(labels, rows)
    counts = pd.Series(labels).value_counts()
    order = [level for level in (*CATEGORIES[attribute], NOT_GIVEN) if level in counts.index]
    groups = tuple(
        GroupFigures(
            group=level,
            rows=int(counts[level]),
            judged=bool(level != NOT_GIVEN and counts[level] >= MIN_GROUP_ROWS),
            figures={
                name: None if np.isnan(value) else float(value)
                for name, value in table.loc[level].items()
            },
        )
        for level in order
    )
    judged = [g for g in groups if g.judged]
    pairs = len(judged) * (len(judged) - 1) // 2
    level = 1 - FAMILY_ERROR / max(pairs, 1)
    ends: dict[str, tuple[float, str, float, str]] = {}
    for name in FIGURES:
        defined = [(v, g.group) for g in judged if (v := g.figures[name]) is not None]
        if len(defined) >= 2:
            ends[name] = (*max(defined), *min(defined))
    # Each group at either end of a gap is resampled once, for all its figures, in table order.
    deviations = {
        g.group: _deviations(g, rows.of(labels == g.group), rng, resamples)
        for g in judged
        if any(g.group in (top, bottom) for _, top, _, bottom in ends.values())
    }
    gaps = []
    tail = (1 - level) / 2
    for name, (top_value, top, bottom_value, bottom) in ends.items():
        gap = top_value - bottom_value
        spread = gap + deviations[top][name] - deviations[bottom][name]
        if np.isnan(spread).all():
            continue
        low, high = np.nanquantile(spread, [tail, 1 - tail])
        gaps.append(Gap(name, gap, top, bottom, float(low), float(high), level))
    return AttributeQuality(attribute, groups, tuple(gaps))


def group_quality(
    inputs: pd.DataFrame,
    actual: npt.ArrayLike,
    predicted: npt.ArrayLike,
    probability: npt.ArrayLike,
    *,
    pass_mark: float,
    seed: int,
    interval_low: npt.ArrayLike | None = None,
    interval_high: npt.ArrayLike | None = None,
    stated_coverage: float | None = None,
    attributes: Sequence[str] = GROUP_ATTRIBUTES,
    resamples: int = RESAMPLES,
) -> GroupQuality:
    """The figures per group of each attribute, and their gaps with intervals.

    `inputs` holds the attribute columns (names as in CATEGORIES, None when not given), one row
    per student, in the order of `actual` (final scores), `predicted` (predicted scores),
    `probability` (P(pass)) and `interval_low`, `interval_high` (the ends of the score interval
    each prediction was served with, NaN where it had none; both None: no intervals at all, so
    `interval_coverage` is undefined everywhere), whose stated level is `stated_coverage`. The
    same arguments and seed give the same result.
    """
    scores = np.asarray(actual, dtype=float)
    if (interval_low is None) != (interval_high is None):
        raise ValueError("interval_low and interval_high go together: give both or neither")
    none = np.full(len(scores), np.nan)
    rows = Rows(
        scores,
        np.asarray(predicted, dtype=float),
        np.asarray(probability, dtype=float),
        none if interval_low is None else np.asarray(interval_low, dtype=float),
        none if interval_high is None else np.asarray(interval_high, dtype=float),
        pass_mark,
    )
    aligned = (rows.actual, rows.predicted, rows.probability, rows.low, rows.high)
    if not all(len(values) == len(inputs) for values in aligned):
        raise ValueError(
            "inputs, actual, predicted, probability and the interval ends differ in length"
        )
    rng = np.random.default_rng(seed)
    found = tuple(
        _attribute_quality(attribute, group_labels(inputs[attribute]), rows, rng, resamples)
        for attribute in attributes
    )
    return GroupQuality(
        found, rows=len(scores), seed=seed, resamples=resamples, stated_coverage=stated_coverage
    )


def model_group_quality(
    model: Any, test: pd.DataFrame, actual: FloatArray, seed: int
) -> GroupQuality:
    """`group_quality` of a trained StudentModel on the feature frame `test`, with the score
    interval it serves (none for a model from before intervals)."""
    predicted = model.predict_scores(test)
    interval = model.score_interval
    low, high = (None, None) if interval is None else interval.bounds(predicted)
    return group_quality(
        test,
        actual,
        predicted,
        model.pass_probabilities(test),
        pass_mark=model.pass_mark,
        seed=seed,
        interval_low=low,
        interval_high=high,
        stated_coverage=None if interval is None else interval.coverage,
    )


# --- the table ------------------------------------------------------------------------------

SHORT_NAMES: Final = {
    "score_rmse": "RMSE",
    "score_mean_error": "bias",
    "pass_roc_auc": "AUC",
    "pass_ece": "ECE",
    "false_negative_rate": "FNR",
    "false_positive_rate": "FPR",
    "flagged_rate": "flagged",
    "interval_coverage": "covered",
}


def _cell(value: float | None) -> str:
    return f"{'-':>9}" if value is None else f"{value:>9.3f}"


def format_group_quality(found: GroupQuality) -> str:
    """The per-group table and the gaps, as `make train` prints them."""
    header = f"    {'group':<24}{'rows':>6}" + "".join(f"{SHORT_NAMES[f]:>9}" for f in FIGURES)
    lines = [header]
    if found.stated_coverage is not None:
        lines.append(
            "    covered: share of final scores inside their score interval "
            f"(stated coverage {found.stated_coverage:.0%}, one width for every student)"
        )
    for attribute in found.attributes:
        lines.append(f"    {attribute.attribute}")
        for g in attribute.groups:
            note = (
                ""
                if g.judged
                else (
                    "  (not a group: left out of gaps)"
                    if g.group == NOT_GIVEN
                    else f"  (too small to judge: < {found.min_group_rows} rows)"
                )
            )
            lines.append(
                f"      {g.group:<22}{g.rows:>6}"
                + "".join(_cell(g.figures.get(f)) for f in FIGURES)
                + note
            )
        for gap in attribute.gaps:
            verdict = "a real gap" if gap.beyond_noise else "within noise"
            lines.append(
                f"      gap {SHORT_NAMES[gap.figure]:<8}{gap.gap:>8.3f} "
                f"({gap.highest} - {gap.lowest}), {gap.level:.1%} interval "
                f"[{gap.interval_low:.3f}, {gap.interval_high:.3f}]: {verdict}"
                + _beside_stated(gap, attribute, found.stated_coverage)
            )
    return "\n".join(lines)


def _beside_stated(gap: Gap, attribute: AttributeQuality, stated: float | None) -> str:
    """For the coverage gap: the stated level beside the least covered group's, so the line
    reads "stated 90%, male 81.0%"."""
    if gap.figure != "interval_coverage" or stated is None:
        return ""
    lowest = next(g for g in attribute.groups if g.group == gap.lowest).figures[gap.figure]
    return "" if lowest is None else f" (stated {stated:.0%}, {gap.lowest} {lowest:.1%})"
