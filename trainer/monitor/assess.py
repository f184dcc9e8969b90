"""From one version's recent predictions to its findings: drift per feature, live quality, alerts.

No I/O: the caller reads the predictions (trainer.monitor.data) and the version's reference
inputs and held-out metrics; this module decides what crosses a threshold.

A feature alerts when its PSI reaches `psi`, or, for a number, when its KS p-value is below
`ks_pvalue`. Drift is judged only with at least `min_rows` recent inputs of the version, live
quality only with at least `min_outcomes` predictions that have an outcome; below that the
figures are shown and marked as too few to judge. Live quality alerts when the RMSE is more than
`rmse_ratio` times the held-out RMSE, or the ROC-AUC is more than `auc_drop` below the held-out.
Per group of students (trainer.monitor.groups), a live gap between groups alerts when it is wider
than the version's training-time gap by more than its threshold (`group_gaps`, the promotion
gate's GAP_THRESHOLDS and rule), judged from `min_outcomes` outcomes like the rest of quality;
one of those figures is the share of each group's outcomes inside their prediction's interval.

Why this module is a little over 300 lines: the thresholds, the alerts they raise and the
summary that prints them are one set of rules; the summary names each threshold as it is
applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import pandas as pd

from studentperf.features import FEATURE_COLUMNS
from studentperf.group_quality_record import GroupQuality
from trainer.evaluate import CalibrationBin
from trainer.group_quality import FIGURES, SHORT_NAMES, format_group_quality
from trainer.monitor.coverage import LiveCoverage, live_coverage
from trainer.monitor.drift import FeatureDrift, feature_drift
from trainer.monitor.groups import MAX_ROWS as MAX_GROUP_ROWS
from trainer.monitor.groups import LiveGroups, live_groups
from trainer.monitor.quality import LiveQuality, live_quality
from trainer.promote import GAP_THRESHOLDS

# What a version's training-time per-group figures are called in the alerts and the report.
AT_TRAINING: Final = "at training"


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.2
    ks_pvalue: float = 0.001
    rmse_ratio: float = 1.25
    auc_drop: float = 0.05
    # PSI over ten bins has a noise floor of about 9/n for n inputs drawn like the training data
    # (0.18 at 50, 0.045 at 200): fewer than this and chance alone nears the PSI threshold.
    min_rows: int = 200
    min_outcomes: int = 30
    # How much wider than at training a live gap between groups may get (the gate's thresholds).
    group_gaps: Mapping[str, float] = field(default_factory=lambda: dict(GAP_THRESHOLDS))
    # Live interval coverage this far below the stated level, and unlikely by chance
    # (trainer.monitor.coverage).
    coverage_drop: float = 0.05
    coverage_pvalue: float = 0.01

    def describe(self) -> str:
        gaps = ", ".join(f"{SHORT_NAMES[f]} {self.group_gaps[f]:g}" for f in FIGURES)
        return (
            f"PSI >= {self.psi:g}; KS p-value < {self.ks_pvalue:g}; live RMSE > "
            f"{self.rmse_ratio:g} x held-out; live ROC-AUC more than {self.auc_drop:g} below "
            f"held-out; a gap between groups wider than at training by more than {gaps}; "
            f"live interval coverage more than {self.coverage_drop:g} below the stated level "
            f"at binomial p < {self.coverage_pvalue:g}; judged from {self.min_rows} recent "
            f"inputs and {self.min_outcomes} outcomes per version"
        )


@dataclass(frozen=True)
class Alert:
    version: str
    # a feature name, "score_rmse" / "pass_roc_auc", "<attribute> <figure>" or
    # "interval_coverage"
    subject: str
    message: str


@dataclass(frozen=True)
class VersionReport:
    version: str
    predictions: int
    first_predicted_at: datetime | None
    last_predicted_at: datetime | None
    drift: tuple[FeatureDrift, ...] = ()
    quality: LiveQuality | None = None
    groups: LiveGroups | None = None  # per group of students, with outcomes
    coverage: LiveCoverage | None = None  # None: no outcome of a prediction with an interval
    alerts: tuple[Alert, ...] = ()
    # What could not be judged and why, e.g. "no reference data for version X".
    notes: tuple[str, ...] = ()
    # Values behind the histograms: the training sample and the recent inputs, per feature.
    reference: pd.DataFrame | None = field(default=None, repr=False)
    recent: pd.DataFrame | None = field(default=None, repr=False)

    def drifting(self, thresholds: Thresholds) -> tuple[str, ...]:
        return tuple(d.feature for d in self.drift if feature_alert(d, thresholds))


@dataclass(frozen=True)
class MonitorReport:
    generated_at: datetime
    window: str  # e.g. "predictions since 2026-11-16 08:00 UTC (7d)"
    thresholds: Thresholds
    versions: tuple[VersionReport, ...]

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return tuple(a for v in self.versions for a in v.alerts)


def feature_alert(drift: FeatureDrift, thresholds: Thresholds) -> str | None:
    """Why the feature crosses a threshold, or None."""
    reasons = []
    if drift.psi >= thresholds.psi:
        reasons.append(f"PSI {drift.psi:.3f} >= {thresholds.psi:g}")
    if drift.ks_pvalue is not None and drift.ks_pvalue < thresholds.ks_pvalue:
        reasons.append(f"KS p-value {drift.ks_pvalue:.2g} < {thresholds.ks_pvalue:g}")
    return ", ".join(reasons) or None


def quality_alerts(version: str, quality: LiveQuality, thresholds: Thresholds) -> list[Alert]:
    found = []
    ratio = quality.rmse_ratio
    if ratio is not None and ratio > thresholds.rmse_ratio:
        held = (quality.held_out or {})["score_rmse"]
        found.append(
            Alert(
                version,
                "score_rmse",
                f"live RMSE {quality.score_rmse:.2f} is {ratio:.2f} x the held-out {held:.2f} "
                f"(threshold {thresholds.rmse_ratio:g} x)",
            )
        )
    drop = quality.auc_drop
    if drop is not None and drop > thresholds.auc_drop:
        held = (quality.held_out or {})["pass_roc_auc"]
        found.append(
            Alert(
                version,
                "pass_roc_auc",
                f"live ROC-AUC {quality.pass_roc_auc:.3f} is {drop:.3f} below the held-out "
                f"{held:.3f} (threshold {thresholds.auc_drop:g})",
            )
        )
    return found


def group_alerts(version: str, groups: LiveGroups) -> list[Alert]:
    return [
        Alert(
            version,
            f"{w.attribute} {w.gap.figure}",
            f"a group of students is served worse than at training: {w.describe(AT_TRAINING)}",
        )
        for w in groups.widened
    ]


def assess_version(
    version: str,
    recent: pd.DataFrame,
    *,
    reference: pd.DataFrame | None,
    held_out: Mapping[str, float] | None,
    thresholds: Thresholds,
    notes: tuple[str, ...] = (),
    held_out_calibration: tuple[CalibrationBin, ...] = (),
    held_out_groups: GroupQuality | None = None,
    max_group_rows: int = MAX_GROUP_ROWS,
) -> VersionReport:
    """`recent`: one row per prediction of `version`, with FEATURE_COLUMNS, predicted_at,
    predicted_final_score, pass_probability, pass_mark and final_score (NaN: no outcome).
    `held_out_groups`: the version's per-group figures at training (metadata.json)."""
    said = list(notes)
    alerts: list[Alert] = []
    drift: tuple[FeatureDrift, ...] = ()
    if reference is None:
        said.append(f"no reference data for version {version}: input drift not measured")
    else:
        drift = tuple(feature_drift(f, reference[f], recent[f]) for f in FEATURE_COLUMNS)
        if len(recent) < thresholds.min_rows:
            said.append(
                f"only {len(recent)} recent inputs, fewer than {thresholds.min_rows}: drift "
                "shown but not judged"
            )
        else:
            for d in drift:
                reason = feature_alert(d, thresholds)
                if reason:
                    alerts.append(Alert(version, d.feature, f"{d.feature} drifted: {reason}"))

    quality = None
    groups = None
    labelled = recent[recent["final_score"].notna()]
    if labelled.empty:
        said.append("no outcomes recorded for these predictions yet: live quality not measured")
    else:
        quality = live_quality(
            labelled["final_score"],
            labelled["predicted_final_score"],
            labelled["pass_probability"],
            labelled["pass_mark"],
            held_out,
            held_out_calibration,
        )
        groups = live_groups(
            labelled,
            recorded=held_out_groups,
            thresholds=thresholds.group_gaps,
            max_rows=max_group_rows,
        )
        if held_out is None:
            said.append(f"no held-out metrics for version {version}: live quality not compared")
        if held_out_groups is None:
            said.append(
                f"no per-group figures from training for version {version}: gaps between "
                "groups shown, not compared"
            )
        if groups.not_compared:
            said.append(
                f"per-group {', '.join(groups.not_compared)} not recorded at training for "
                f"version {version}: those gaps shown, not compared"
            )
        if groups.sampled:
            said.append(
                f"per-group quality over a seeded sample of {groups.live.rows:,} of the "
                f"{groups.outcomes:,} outcomes (--max-group-rows)"
            )
        if len(labelled) < thresholds.min_outcomes:
            said.append(
                f"only {len(labelled)} predictions with outcomes, fewer than "
                f"{thresholds.min_outcomes}: live quality shown but not judged"
            )
        else:
            alerts += quality_alerts(version, quality, thresholds)
            alerts += group_alerts(version, groups)
    coverage = None
    if "score_interval_low" in labelled and not labelled.empty:
        coverage = live_coverage(
            labelled["final_score"],
            labelled["score_interval_low"],
            labelled["score_interval_high"],
            labelled["interval_coverage"],
        )
    if (
        coverage is not None
        and coverage.rows >= thresholds.min_outcomes
        and coverage.falls_short(thresholds.coverage_drop, thresholds.coverage_pvalue)
    ):
        alerts.append(Alert(version, "interval_coverage", f"{coverage.describe()}: too low"))
    times = recent["predicted_at"]
    return VersionReport(
        version=version,
        predictions=len(recent),
        first_predicted_at=times.min() if len(times) else None,
        last_predicted_at=times.max() if len(times) else None,
        drift=drift,
        quality=quality,
        groups=groups,
        coverage=coverage,
        alerts=tuple(alerts),
        notes=tuple(said),
        reference=reference,
        recent=recent,
    )


def summary(report: MonitorReport) -> str:
    """The short text the command prints: the window, thresholds, each version, the verdict."""
    lines = [
        f"monitoring report, {report.generated_at:%Y-%m-%d %H:%M:%S} UTC",
        f"window: {report.window}",
        f"thresholds: {report.thresholds.describe()}",
    ]
    if not report.versions:
        lines.append("no predictions in the window: nothing to compare")
    for v in report.versions:
        lines.append(f"version {v.version}: {v.predictions} predictions")
        if v.drift:
            worst = sorted(v.drift, key=lambda d: -d.psi)[:3]
            shown = ", ".join(f"{d.feature} {d.psi:.3f}" for d in worst)
            lines.append(f"  highest PSI: {shown}")
        q = v.quality
        if q is not None:
            auc = "n/a (one class)" if q.pass_roc_auc is None else f"{q.pass_roc_auc:.3f}"
            held = q.held_out or {}
            vs = (
                f" (held-out RMSE {held['score_rmse']:.2f}, ROC-AUC {held['pass_roc_auc']:.3f})"
                if {"score_rmse", "pass_roc_auc"} <= set(held)
                else ""
            )
            lines.append(
                f"  live quality over {q.rows} outcomes: RMSE {q.score_rmse:.2f}, ROC-AUC {auc}, "
                f"ECE {q.pass_ece:.3f}{vs}"
            )
        if v.groups is not None:
            lines += group_summary(v.groups)
        if v.coverage is not None:
            lines.append(f"  {v.coverage.describe()}")
        lines += [f"  note: {n}" for n in v.notes]
        lines += [f"  ALERT: {a.message}" for a in v.alerts]
    count = len(report.alerts)
    lines.append(
        f"result: {count} threshold(s) crossed" if count else "result: no threshold crossed"
    )
    return "\n".join(lines)


def group_summary(groups: LiveGroups) -> list[str]:
    """The live per-group table as `make train` prints it, then the training-time gaps each live
    gap is compared with."""
    lines = [
        f"  live quality per group of students over {groups.live.rows} outcomes "
        "(figures per group, then the gaps between groups):",
        *(f"  {line}" for line in format_group_quality(groups.live).splitlines()),
    ]
    if groups.recorded is None:
        return lines
    lines.append(f"    gaps {AT_TRAINING} (each live gap is compared with its own):")
    for attribute in groups.recorded.attributes:
        gaps = ", ".join(f"{SHORT_NAMES[g.figure]} {g.gap:.3f}" for g in attribute.gaps)
        lines.append(f"      {attribute.attribute}: {gaps or 'none (too few rows per group)'}")
    return lines
