"""Promotion: the new version becomes `models/current` only if it is not worse than the current.

"Not worse", both on the new version's own test split (rows neither model chose anything on,
as far as the new one knows):

- score RMSE at most `RMSE_TOLERANCE` (1 %) above the current model's, and
- pass ROC-AUC at most `AUC_TOLERANCE` (0.005) below the current model's.

The tolerances keep noise from blocking a retrain on fresh data; a real loss of quality is
refused. If the current model was trained on some of these test rows it has an edge here, so
the gate errs towards keeping it.

And per group of students (trainer.group_quality), for every attribute and figure: the new
version's gap between groups may exceed the current version's gap by at most that figure's
threshold (`GAP_THRESHOLDS`, overridden by STUDENTPERF_GROUP_GAP_THRESHOLDS), unless the new gap
is within noise (its bootstrap interval reaches 0). The current version's gap is the one it was
promoted with (its metadata.json), so a retrain on data that serves a group worse is refused
even though the current model, scored on that data, would serve the group badly too: the
operator should look before serving it (`force`). A version from before per-group figures is
measured on the new version's test split instead; a gap the current version did not have (too
few rows in a group then) counts as 0. A figure its record predates (`interval_coverage`, in a
record written before that figure existed) is not compared at all, and the decision says so:
its gap then is unknown, and 0 would call the gap the version may always have had a widening.

With nothing to compare against (no current version, one
that cannot be loaded, or one made for another pass mark) the new version is promoted, and
`force` promotes regardless. The comparison and the switch of the link happen under an
exclusive lock on `models/.promote.lock`, so two trainers cannot both compare against the same
old version and then overwrite each other; the switch itself is one atomic rename. Each
promotion is noted in `models/promotions.jsonl`, which `studentperf-rollback` walks back.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd

from studentperf.features import FEATURE_COLUMNS, TARGET_SCORE
from studentperf.group_quality_record import Gap, GroupQuality
from studentperf.model_artifact import (
    CURRENT,
    LoadedModel,
    ModelArtifactError,
    load_artifact,
    set_current,
)
from studentperf.model_folder import note_promotion
from trainer.evaluate import Metrics, model_metrics
from trainer.group_quality import FIGURES, model_group_quality

RMSE_TOLERANCE: Final = 0.01
AUC_TOLERANCE: Final = 0.005
LOCK_FILE: Final = ".promote.lock"
# How much wider than the current version's a real gap between groups may get, per figure, in
# the figure's unit: points of score, or a difference of AUC, calibration error or rate.
# Calm retrains on new synthetic data stay well inside these (the per-group figures of a
# group of 100 move by about a point of RMSE and 0.05 of a rate from noise alone).
GAP_THRESHOLDS: Final[dict[str, float]] = {
    "score_rmse": 2.0,
    "score_mean_error": 2.0,
    "pass_roc_auc": 0.05,
    "pass_ece": 0.05,
    "false_negative_rate": 0.10,
    "false_positive_rate": 0.10,
    "flagged_rate": 0.10,
    # Points of coverage, like the rates: one group's share of scores inside the interval
    # falling 10 points further behind the best covered group's (at the interval's low end,
    # so beyond noise) than before, e.g. 70 % where 80 % is stated and was reached.
    "interval_coverage": 0.10,
}
GAP_THRESHOLDS_VARIABLE: Final = "STUDENTPERF_GROUP_GAP_THRESHOLDS"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    current_version: str | None = None  # what was served before
    current_metrics: Metrics | None = None  # that version on the new version's test split
    widened_gaps: tuple[str, ...] = ()  # each gap past its threshold, a sentence with figures


def parse_gap_thresholds(text: str) -> dict[str, float]:
    """GAP_THRESHOLDS with the overrides of "figure=value,figure=value" applied."""
    thresholds = dict(GAP_THRESHOLDS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in FIGURES:
            raise ValueError(
                f"{item!r}: unknown figure {name!r}; expected figure=value with a figure among "
                f"{', '.join(FIGURES)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: {value.strip()!r} is not a number") from None
        if not number >= 0:
            raise ValueError(f"{item!r}: a threshold must be a number >= 0")
        thresholds[name] = number
    return thresholds


@dataclass(frozen=True)
class WidenedGap:
    """One real gap wider than the one it is compared with by more than its threshold."""

    attribute: str
    gap: Gap
    was: float  # the gap compared with (0 when there was none)
    limit: float  # its threshold

    def describe(self, against: str = "now") -> str:
        """A sentence with the figures; `against` says what `was` is (the gate: "now", the
        served version's)."""
        gap = self.gap
        return (
            f"{self.attribute} {gap.figure} gap {gap.gap:.3f} ({gap.highest} vs "
            f"{gap.lowest}, {gap.level:.1%} interval [{gap.interval_low:.3f}, "
            f"{gap.interval_high:.3f}]) against {self.was:.3f} {against}: even its interval's "
            f"low end is wider by {gap.interval_low - self.was:.3f}, more than the "
            f"{self.limit:g} allowed"
        )


def gap_widenings(
    candidate: GroupQuality, current: GroupQuality, thresholds: Mapping[str, float]
) -> list[WidenedGap]:
    """The gate per group: each real gap of `candidate` wider than `current`'s by more than its
    threshold (empty: none), among the figures `current` measured (`not_compared`). `make
    monitor` applies the same rule to live figures."""
    found = []
    for attribute in candidate.attributes:
        before = current.attribute(attribute.attribute)
        for gap in attribute.gaps:
            if current.predates(gap.figure):
                continue
            previous = before.gap(gap.figure) if before is not None else None
            was = previous.gap if previous is not None else 0.0
            limit = thresholds.get(gap.figure, GAP_THRESHOLDS[gap.figure])
            # The low end of the interval: a gap that noise could have widened is not called.
            if gap.interval_low - was > limit:
                found.append(WidenedGap(attribute.attribute, gap, was, limit))
    return found


def not_compared(candidate: GroupQuality, current: GroupQuality) -> tuple[str, ...]:
    """The figures with a gap in `candidate` that `current`'s record predates, in FIGURES
    order: `gap_widenings` leaves them out, for want of a gap to compare with."""
    gapped = {gap.figure for attribute in candidate.attributes for gap in attribute.gaps}
    return tuple(f for f in FIGURES if f in gapped and current.predates(f))


def widened_gaps(
    candidate: GroupQuality, current: GroupQuality, thresholds: Mapping[str, float]
) -> list[str]:
    """`gap_widenings` as sentences with the figures, as the gate's message gives them."""
    return [w.describe() for w in gap_widenings(candidate, current, thresholds)]


def not_worse(candidate: Metrics, current: Metrics) -> tuple[bool, str]:
    """The gate itself: (passes, a sentence with the figures)."""
    rmse_ok = candidate.score_rmse <= current.score_rmse * (1 + RMSE_TOLERANCE)
    auc_ok = candidate.pass_roc_auc >= current.pass_roc_auc - AUC_TOLERANCE
    figures = (
        f"RMSE {candidate.score_rmse:.3f} vs {current.score_rmse:.3f} "
        f"(allowed up to {current.score_rmse * (1 + RMSE_TOLERANCE):.3f}), "
        f"ROC-AUC {candidate.pass_roc_auc:.4f} vs {current.pass_roc_auc:.4f} "
        f"(allowed down to {current.pass_roc_auc - AUC_TOLERANCE:.4f})"
    )
    return rmse_ok and auc_ok, figures


@contextmanager
def promotion_lock(models_dir: Path) -> Iterator[None]:
    """Held while `current` is compared and moved: by the gate, and by a rollback."""
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def promote_if_not_worse(
    models_dir: Path,
    version: str,
    candidate: Metrics,
    test: pd.DataFrame,
    *,
    pass_mark: float,
    groups: GroupQuality | None = None,
    gap_thresholds: Mapping[str, float] = GAP_THRESHOLDS,
    force: bool = False,
) -> Decision:
    """Compares `version` (already saved under `models_dir`) with `current`; switches if due.
    `groups` is the version's per-group quality on `test` (None: no per-group gate)."""
    with promotion_lock(models_dir):
        decision = _decide(
            models_dir,
            candidate,
            test,
            pass_mark=pass_mark,
            groups=groups,
            gap_thresholds=gap_thresholds,
            force=force,
        )
        if decision.promoted:
            link = models_dir / CURRENT
            # What a rollback goes back to: what was served, even a version the gate could not
            # load to compare against (decision.current_version is None then).
            replaced = link.readlink().name if link.is_symlink() else None
            set_current(models_dir, version)
            note_promotion(models_dir, version, replaced=replaced)
    return decision


def _current_groups(current: LoadedModel, test: pd.DataFrame, seed: int) -> GroupQuality:
    """What the current version was promoted with, else it measured on `test` now."""
    recorded = current.metadata.get("group_quality")
    if isinstance(recorded, dict):
        try:
            return GroupQuality.from_dict(recorded)
        except (KeyError, TypeError, ValueError):
            pass
    return model_group_quality(
        current.model,
        test[list(FEATURE_COLUMNS)],
        test[TARGET_SCORE].to_numpy(dtype=float),
        seed,
    )


def _decide(
    models_dir: Path,
    candidate: Metrics,
    test: pd.DataFrame,
    *,
    pass_mark: float,
    groups: GroupQuality | None,
    gap_thresholds: Mapping[str, float],
    force: bool,
) -> Decision:
    if not (models_dir / "current").is_symlink():
        return Decision(True, "no current version: promoted")
    try:
        current = load_artifact(models_dir)
    except ModelArtifactError as err:
        return Decision(True, f"the current version cannot be used ({err}): promoted")
    if current.model.pass_mark != pass_mark:
        return Decision(
            True,
            f"the current version {current.version} is for pass mark "
            f"{current.model.pass_mark:g}, not {pass_mark:g}, so not comparable: promoted",
            current.version,
        )
    found = model_metrics(
        current.model, test[list(FEATURE_COLUMNS)], test[TARGET_SCORE].to_numpy(dtype=float)
    )
    passes, figures = not_worse(candidate, found)
    widened: tuple[str, ...] = ()
    if groups is not None:
        current_groups = _current_groups(current, test, groups.seed)
        widened = tuple(widened_gaps(groups, current_groups, gap_thresholds))
        figures += (
            "; group gaps widened: " + "; ".join(widened)
            if widened
            else "; no gap between groups widened beyond its threshold"
        )
        unknown = not_compared(groups, current_groups)
        if unknown:
            figures += (
                f" (gaps in {', '.join(unknown)} not compared: the figures "
                f"{current.version} was promoted with predate them)"
            )
    if passes and not widened:
        return Decision(
            True, f"not worse than {current.version}: {figures}: promoted", current.version, found
        )
    what = (
        f"worse than {current.version}"
        if not passes
        else f"not worse overall than {current.version}, but it serves a group of students worse"
    )
    if force:
        return Decision(
            True, f"{what} ({figures}) but forced: promoted", current.version, found, widened
        )
    return Decision(
        False,
        f"{what}: {figures}: NOT promoted (--force overrides)",
        current.version,
        found,
        widened,
    )
