"""The monitoring report as one self-contained HTML file: inline CSS, PNG plots as data URIs.

Per version: a PSI bar per feature with the threshold line, the training and recent shares of
each feature's PSI bins side by side (the histograms PSI is computed from), and, when outcomes
have been recorded, the calibration curve of the live pass probabilities and the tables of live
quality per group of students (score-interval coverage among the figures, beside the stated
level), with each gap beside the version's gap at training. Nothing is fetched when the file is
opened, so it can be mailed or archived as it is.

Plots use matplotlib's object API (Figure, no pyplot), so no global state or GUI backend is
involved; PNG output goes through the Agg renderer.

Why this module is over 300 lines: the plots, tables and captions of one report share its
layout and wording (`plot_captions` lists the captions the sections use); split, one section
of the report would be spread over several files.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from html import escape
from typing import Final

import numpy as np
from matplotlib.figure import Figure

from trainer.group_quality import FIGURES, NOT_GIVEN, SHORT_NAMES
from trainer.monitor.assess import (
    AT_TRAINING,
    MonitorReport,
    Thresholds,
    VersionReport,
    feature_alert,
)
from trainer.monitor.drift import FeatureDrift
from trainer.monitor.groups import LiveGroups
from trainer.monitor.quality import LiveQuality

DPI: Final = 100
TRAINING_COLOUR: Final = "#4c72b0"
RECENT_COLOUR: Final = "#dd8452"
ALERT_COLOUR: Final = "#c44e52"
CALM_COLOUR: Final = "#55a868"


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def psi_bars(version: VersionReport, thresholds: Thresholds) -> tuple[str, str]:
    """(caption, data URI): one horizontal bar per feature, red where it crosses a threshold."""
    caption = psi_caption(version.version)
    drift = list(version.drift)
    figure = Figure(figsize=(6.4, 0.35 * len(drift) + 1.4), layout="constrained")
    axes = figure.add_subplot()
    colours = [ALERT_COLOUR if feature_alert(d, thresholds) else CALM_COLOUR for d in drift]
    positions = np.arange(len(drift))
    axes.barh(positions, [d.psi for d in drift], color=colours)
    axes.set_yticks(positions, [d.feature for d in drift])
    axes.invert_yaxis()
    axes.axvline(
        thresholds.psi,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"threshold {thresholds.psi:g}",
    )
    axes.legend(fontsize=8, loc="lower right")
    axes.set_xlabel("population stability index (training vs recent)", fontsize=9)
    axes.set_xlim(0, max([thresholds.psi * 1.3, *(d.psi * 1.1 for d in drift)]))
    axes.set_title("PSI per feature (red: threshold crossed)", fontsize=10)
    return caption, _png(figure)


def histogram(drift: FeatureDrift, thresholds: Thresholds) -> tuple[str, str]:
    """(title, data URI): training and recent shares of each PSI bin, side by side."""
    title = histogram_title(drift)
    figure = Figure(figsize=(4.2, 2.9), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(drift.bins))
    width = 0.4
    axes.bar(
        positions - width / 2,
        [b.reference_share for b in drift.bins],
        width,
        label=f"training ({drift.reference_rows})",
        color=TRAINING_COLOUR,
    )
    axes.bar(
        positions + width / 2,
        [b.recent_share for b in drift.bins],
        width,
        label=f"recent ({drift.recent_rows})",
        color=RECENT_COLOUR,
    )
    rotate = len(drift.bins) > 4 or any(len(b.label) > 10 for b in drift.bins)
    axes.set_xticks(
        positions,
        [b.label for b in drift.bins],
        rotation=40 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize=7,
    )
    axes.set_ylabel("share of rows", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(fontsize=7)
    alert = feature_alert(drift, thresholds) is not None
    axes.set_title(title, fontsize=9, color=ALERT_COLOUR if alert else "black")
    return title, _png(figure)


def calibration_curve(version: str, quality: LiveQuality) -> tuple[str, str]:
    """(caption, data URI): observed pass rate against mean predicted probability per bin."""
    caption = calibration_caption(version, quality)
    figure = Figure(figsize=(4.2, 4.0), layout="constrained")
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    bins = quality.calibration
    axes.plot(
        [b.mean_predicted for b in bins],
        [b.observed_rate for b in bins],
        marker="o",
        color=RECENT_COLOUR,
        label=f"live (ECE {quality.pass_ece:.3f})",
    )
    if quality.held_out_calibration:
        held = quality.held_out_calibration
        ece = (quality.held_out or {}).get("pass_ece")
        axes.plot(
            [b.mean_predicted for b in held],
            [b.observed_rate for b in held],
            marker="s",
            markersize=4,
            color=TRAINING_COLOUR,
            alpha=0.8,
            label="held-out test split" + (f" (ECE {ece:.3f})" if ece is not None else ""),
        )
    for b in bins:
        axes.annotate(
            str(b.rows),
            (b.mean_predicted, b.observed_rate),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    # A little room around the unit square, so points (and their counts) at 0 or 1 show whole.
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.08)
    axes.set_xlabel("mean predicted P(pass) in the bin (live rows beside each point)", fontsize=8)
    axes.set_ylabel("observed pass rate", fontsize=8)
    axes.legend(fontsize=8, loc="upper left")
    axes.set_title(f"Calibration of P(pass), {quality.rows} outcomes", fontsize=9)
    return caption, _png(figure)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 1400px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.alert { color: #b00020; font-weight: 600; } .ok { color: #2e7d32; font-weight: 600; }
.note { color: #555; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.8rem; color: #555; max-width: 420px; }
pre { background: #f6f6f6; padding: 0.6rem; white-space: pre-wrap; }
"""


_READING_DRIFT = (
    '<p class="note">Each feature\'s values are put in bins fixed by the training sample (its '
    "deciles for numbers, so each training bar is about 10 %; one bin per category; a bin for "
    "missing values). The population stability index sums, over the bins, (recent share - "
    "training share) x ln(recent share / training share): below 0.1 no real change, 0.1 to 0.2 "
    "a moderate shift, above 0.2 inputs the model has seen little of. For numbers the "
    "Kolmogorov-Smirnov p-value is the chance of a gap this large between the two samples if "
    "nothing had changed.</p>"
)


def _figure(title: str, uri: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{escape(title)}" title="{escape(title)}">'
        f"<figcaption>{escape(title)}</figcaption></figure>"
    )


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _drift_table(version: VersionReport, thresholds: Thresholds) -> str:
    rows = []
    for d in version.drift:
        reason = feature_alert(d, thresholds)
        status = f'<span class="alert">{escape(reason)}</span>' if reason else "ok"
        ks = (
            f"{_number(d.ks_statistic)} / {d.ks_pvalue:.2g}"
            if d.ks_pvalue is not None
            else "(category)"
            if not d.numeric
            else "n/a"
        )
        rows.append(
            f"<tr><td>{escape(d.feature)}</td><td>{d.psi:.3f}</td><td>{ks}</td>"
            f"<td>{d.reference_rows}</td><td>{d.recent_rows}</td><td>{status}</td></tr>"
        )
    return (
        "<table><tr><th>feature</th><th>PSI</th><th>KS statistic / p-value</th>"
        "<th>training rows</th><th>recent rows</th><th>status</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _quality_table(quality: LiveQuality) -> str:
    held = quality.held_out or {}
    rows = [
        ("score RMSE", quality.score_rmse, held.get("score_rmse")),
        ("pass ROC-AUC", quality.pass_roc_auc, held.get("pass_roc_auc")),
        ("pass ECE", quality.pass_ece, held.get("pass_ece")),
    ]
    body = "".join(
        f"<tr><td>{name}</td><td>{_number(live)}</td><td>{_number(h)}</td></tr>"
        for name, live, h in rows
    )
    return (
        f"<p>{quality.rows} predictions with an outcome, {quality.passed} of them passes.</p>"
        "<table><tr><th>metric</th><th>live</th><th>held-out (test split)</th></tr>"
        f"{body}</table>"
    )


_READING_GROUPS = (
    '<p class="note">Each group is the students whose prediction was made with that gender, lunch '
    "program or parental education. RMSE and bias (predicted minus actual score: positive means "
    "over-predicted) are in points; AUC and ECE describe P(pass); FNR is the share of students "
    "at risk the model called safe, FPR the share of those who passed that it flagged, flagged "
    "the share flagged at risk; covered is the share of outcomes inside the score interval "
    "their prediction was served with (predictions recorded without one left out), against "
    "one stated coverage for every student. A gap is the highest group's figure minus the "
    "lowest's, with a seeded bootstrap interval: one that reaches 0 is within noise. An alert "
    "needs even the "
    "interval's low end to exceed the version's gap at training by more than the threshold, "
    "the promotion gate's rule. A group of fewer than {rows} outcomes is too small to judge: "
    "shown, left out of the gaps.</p>"
)


def _group_tables(groups: LiveGroups, thresholds: Thresholds) -> str:
    live = groups.live
    head = "".join(f"<th>{SHORT_NAMES[f]}</th>" for f in FIGURES)
    parts = [
        f"<p>{live.rows} predictions with an outcome"
        + (f" (a seeded sample of the {groups.outcomes})" if groups.sampled else "")
        + ".</p>",
        _READING_GROUPS.format(rows=live.min_group_rows),
    ]
    if live.stated_coverage is not None:
        parts.append(
            f"<p>Stated interval coverage: {live.stated_coverage:.0%} for every student; the "
            "covered column is what each group got.</p>"
        )
    widened = {(w.attribute, w.gap.figure) for w in groups.widened}
    for attribute in live.attributes:
        rows = []
        for g in attribute.groups:
            status = (
                "judged"
                if g.judged
                else "not a group: left out of gaps"
                if g.group == NOT_GIVEN
                else f"too small to judge (&lt; {live.min_group_rows} rows)"
            )
            cells = "".join(f"<td>{_number(g.figures.get(f))}</td>" for f in FIGURES)
            rows.append(
                f"<tr><td>{escape(g.group)}</td><td>{g.rows}</td>{cells}<td>{status}</td></tr>"
            )
        parts.append(f"<h4>{escape(attribute.attribute)}</h4>")
        parts.append(
            f"<table><tr><th>group</th><th>rows</th>{head}<th>status</th></tr>"
            + "".join(rows)
            + "</table>"
        )
        before = groups.recorded.attribute(attribute.attribute) if groups.recorded else None
        gap_rows = []
        for gap in attribute.gaps:
            was = before.gap(gap.figure) if before is not None else None
            if (attribute.attribute, gap.figure) in widened:
                verdict = '<span class="alert">ALERT: wider than at training</span>'
            elif not gap.beyond_noise:
                verdict = "within noise"
            elif groups.recorded is None or gap.figure in groups.not_compared:
                verdict = "a real gap (not compared)"
            else:
                verdict = "a real gap, within its threshold"
            recorded = (
                "n/a"
                if groups.recorded is None or gap.figure in groups.not_compared
                else _number(was.gap if was is not None else 0.0)
            )
            gap_rows.append(
                f"<tr><td>{SHORT_NAMES[gap.figure]}</td><td>{gap.gap:.3f}</td>"
                f"<td>{escape(gap.highest)} - {escape(gap.lowest)}</td>"
                f"<td>[{gap.interval_low:.3f}, {gap.interval_high:.3f}] ({gap.level:.1%})</td>"
                f"<td>{recorded}</td><td>{thresholds.group_gaps[gap.figure]:g}</td>"
                f"<td>{verdict}</td></tr>"
            )
        if gap_rows:
            parts.append(
                "<table><tr><th>gap</th><th>live</th><th>highest - lowest</th><th>interval</th>"
                f"<th>{AT_TRAINING}</th><th>threshold</th><th>status</th></tr>"
                + "".join(gap_rows)
                + "</table>"
            )
        else:
            parts.append('<p class="note">No gap: fewer than two groups large enough to judge.</p>')
    return "\n".join(parts)


def _version_section(version: VersionReport, thresholds: Thresholds) -> str:
    when = (
        f"{version.first_predicted_at:%Y-%m-%d %H:%M} to {version.last_predicted_at:%Y-%m-%d %H:%M}"
        " UTC"
        if version.first_predicted_at is not None and version.last_predicted_at is not None
        else "no predictions"
    )
    parts = [
        f'<section id="version-{escape(version.version)}">',
        f"<h2>Version {escape(version.version)}</h2>",
        f"<p>{version.predictions} predictions, {when}.</p>",
    ]
    parts += [f'<p class="alert">ALERT: {escape(a.message)}</p>' for a in version.alerts]
    parts += [f'<p class="note">{escape(n)}</p>' for n in version.notes]
    if version.drift:
        parts.append("<h3>Input drift (recent inputs vs the version's training inputs)</h3>")
        parts.append(_READING_DRIFT)
        parts.append(_drift_table(version, thresholds))
        plots = [psi_bars(version, thresholds), *(histogram(d, thresholds) for d in version.drift)]
        parts.append(_plots(plots))
    if version.quality is not None:
        parts.append("<h3>Live quality (predictions against recorded outcomes)</h3>")
        parts.append(_quality_table(version.quality))
        parts.append(_plots([calibration_curve(version.version, version.quality)]))
    if version.groups is not None:
        parts.append("<h3>Live quality per group of students</h3>")
        parts.append(_group_tables(version.groups, thresholds))
    if version.coverage is not None:
        parts.append("<h3>Score intervals (outcomes inside their prediction's range)</h3>")
        parts.append(f"<p>{escape(version.coverage.describe())}.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _plots(plots: Iterable[tuple[str, str]]) -> str:
    return '<div class="plots">' + "".join(_figure(t, u) for t, u in plots) + "</div>"


def plot_captions(report: MonitorReport) -> list[str]:
    """The captions (and alt texts) of the report's plots, in order: what a reader, or a test,
    looks for."""
    captions = []
    for v in report.versions:
        if v.drift:
            captions.append(psi_caption(v.version))
            captions += [histogram_title(d) for d in v.drift]
        if v.quality is not None:
            captions.append(calibration_caption(v.version, v.quality))
    return captions


def psi_caption(version: str) -> str:
    return f"PSI per feature, version {version}"


def calibration_caption(version: str, quality: LiveQuality) -> str:
    return f"Calibration of P(pass), version {version} ({quality.rows} outcomes)"


def histogram_title(drift: FeatureDrift) -> str:
    title = f"{drift.feature}: PSI {drift.psi:.3f}"
    if drift.ks_pvalue is not None:
        title += f", KS p {drift.ks_pvalue:.2g}"
    return title


def render(report: MonitorReport, summary_text: str) -> str:
    crossed = len(report.alerts)
    verdict = (
        f'<p class="alert">{crossed} threshold(s) crossed.</p>'
        if crossed
        else '<p class="ok">No threshold crossed.</p>'
    )
    sections = [_version_section(v, report.thresholds) for v in report.versions]
    if not report.versions:
        sections.append('<p class="note">No predictions in the window: nothing to compare.</p>')
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>studentperf monitoring report, {report.generated_at:%Y-%m-%d %H:%M} UTC"
            "</title>",
            f"<style>{_STYLE}</style></head><body>",
            "<h1>studentperf monitoring report</h1>",
            f"<p>Generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC; "
            f"{escape(report.window)}.</p>",
            verdict,
            f"<p>Thresholds: {escape(report.thresholds.describe())}.</p>",
            "<h3>Summary</h3>",
            f"<pre>{escape(summary_text)}</pre>",
            *sections,
            "</body></html>",
        ]
    )
