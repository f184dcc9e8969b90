"""The monitor's pure logic on fixed data: PSI and its bins, KS, live quality, alerts, the
summary, the HTML report and the command line."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from studentperf.features import FEATURE_COLUMNS, NUMERIC_FEATURES
from trainer import synthetic
from trainer.evaluate import CalibrationBin
from trainer.monitor.assess import MonitorReport, Thresholds, assess_version, summary
from trainer.monitor.cli import parse_args, parse_since
from trainer.monitor.drift import EPSILON, MISSING, feature_drift, numeric_edges
from trainer.monitor.quality import live_quality
from trainer.monitor.report_html import plot_captions, render

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
HELD_OUT = {"score_rmse": 7.0, "pass_roc_auc": 0.9, "pass_ece": 0.03}


def series(values: Sequence[object]) -> pd.Series:
    return pd.Series(values, dtype=object)


# --- PSI -------------------------------------------------------------------------------------


def test_psi_of_a_category_is_the_sum_over_its_levels() -> None:
    reference = series(["female"] * 50 + ["male"] * 50)
    recent = series(["female"] * 25 + ["male"] * 75)
    drift = feature_drift("gender", reference, recent)
    assert [b.label for b in drift.bins] == ["female", "male", "other"]  # no missing: no bin
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert drift.psi == pytest.approx(expected) == pytest.approx(0.2747, abs=1e-4)
    assert drift.ks_pvalue is None and not drift.numeric


def test_an_empty_bin_costs_a_finite_amount_through_epsilon() -> None:
    reference = series(["standard"] * 100)
    recent = series(["standard"] * 90 + ["free_or_reduced"] * 10)
    drift = feature_drift("lunch_program", reference, recent)
    by_label = {b.label: b for b in drift.bins}
    assert by_label["free_or_reduced"].psi_term == pytest.approx(
        (0.1 - EPSILON) * math.log(0.1 / EPSILON)
    )
    assert math.isfinite(drift.psi) and drift.psi > 0.6


def test_same_data_has_zero_psi_and_a_ks_p_value_of_one() -> None:
    frame = synthetic.generate(1000, 3)
    for feature in FEATURE_COLUMNS:
        drift = feature_drift(feature, frame[feature], frame[feature])
        assert drift.psi == 0.0, feature
        if feature in NUMERIC_FEATURES:
            assert drift.ks_pvalue == pytest.approx(1.0), feature


def test_numbers_are_binned_by_the_training_deciles() -> None:
    reference = pd.Series(np.arange(100, dtype=float))
    edges = numeric_edges(reference)
    assert len(edges) == 10 and edges[-1] == 99.0
    drift = feature_drift("attendance_percentage", reference, reference + 50)
    assert [b.reference_share for b in drift.bins] == pytest.approx([0.1] * 10 + [0.0])
    assert drift.bins[0].label == "≤ 9" and drift.bins[-1].label == "> 99"
    # Half the shifted values lie above every training value: the last bin shows it.
    assert drift.bins[-1].recent_share == pytest.approx(0.5)
    assert drift.psi > 1 and drift.ks_pvalue is not None and drift.ks_pvalue < 1e-10


def test_repeated_quantiles_collapse_into_one_edge() -> None:
    flags = pd.Series([0.0] * 30 + [1.0] * 70)
    assert list(numeric_edges(flags)) == [0.0, 1.0]
    drift = feature_drift("assignments_completed", flags, pd.Series([0.0] * 60 + [1.0] * 40))
    assert [(b.label, b.reference_share, b.recent_share) for b in drift.bins] == [
        ("≤ 0", 0.3, 0.6),
        ("(0, 1]", 0.7, 0.4),
        ("> 1", 0.0, 0.0),
    ]


def test_missing_values_get_their_own_bin() -> None:
    reference = pd.Series(np.linspace(0, 4, 100))
    recent = pd.Series([np.nan] * 20 + list(np.linspace(0, 4, 80)))
    drift = feature_drift("previous_gpa", reference, recent)
    assert (drift.bins[-1].label, drift.bins[-1].reference_share) == (MISSING, 0.0)
    assert drift.bins[-1].recent_share == pytest.approx(0.2)
    assert drift.recent_rows == 100
    categories = feature_drift("gender", series(["male", None]), series(["male", "male"]))
    assert categories.bins[-1].label == MISSING and categories.bins[-1].reference_share == 0.5


def test_an_unknown_feature_is_refused() -> None:
    with pytest.raises(ValueError, match="not a model feature"):
        feature_drift("shoe_size", series([1]), series([1]))


# --- live quality ----------------------------------------------------------------------------


def test_live_quality_from_fixed_predictions_and_outcomes() -> None:
    actual = [40.0, 60.0, 70.0, 30.0]
    predicted = [42.0, 57.0, 74.0, 30.0]
    probabilities = [0.2, 0.7, 0.9, 0.1]
    quality = live_quality(actual, predicted, probabilities, [50.0] * 4, HELD_OUT)
    assert quality.score_rmse == pytest.approx(math.sqrt((4 + 9 + 16 + 0) / 4))
    assert quality.pass_roc_auc == 1.0 and (quality.rows, quality.passed) == (4, 2)
    assert quality.rmse_ratio == pytest.approx(quality.score_rmse / 7.0)
    assert quality.auc_drop == pytest.approx(0.9 - 1.0)
    # Bins 0.1-0.2 (p 0.1: fail), 0.2-0.3 (0.2: fail), 0.7-0.8 (pass), 0.9-1.0 (pass).
    assert quality.pass_ece == pytest.approx((0.1 + 0.2 + 0.3 + 0.1) / 4)
    assert [b.rows for b in quality.calibration] == [1, 1, 1, 1]


def test_live_quality_with_one_class_has_no_roc_auc() -> None:
    quality = live_quality([80.0, 90.0], [75.0, 85.0], [0.8, 0.9], [50.0, 50.0])
    assert quality.pass_roc_auc is None and quality.auc_drop is None
    assert quality.rmse_ratio is None  # no held-out figures given
    with pytest.raises(ValueError, match="at least one"):
        live_quality([], [], [], [])


# --- assessing a version ---------------------------------------------------------------------


def recent_frame(
    frame: pd.DataFrame, *, outcomes: bool = False, shift: float = 0.0
) -> pd.DataFrame:
    """What trainer.monitor.data returns, built from a synthetic frame."""
    recent = frame[list(FEATURE_COLUMNS)].copy()
    recent["model_version"] = "v1"
    recent["predicted_at"] = pd.date_range(NOW - timedelta(hours=1), periods=len(frame), freq="s")
    recent["predicted_final_score"] = frame["final_score"].clip(0, 100)
    recent["pass_probability"] = np.where(frame["final_score"] >= 50, 0.8, 0.2)
    recent["pass_mark"] = 50.0
    recent["final_score"] = (frame["final_score"] + shift).clip(0, 100) if outcomes else np.nan
    return recent


def test_planted_drift_alerts_on_exactly_the_planted_features() -> None:
    reference = synthetic.generate(2000, 1)[list(FEATURE_COLUMNS)]
    drifted = synthetic.generate(400, 2)
    drifted["study_hours_per_week"] = drifted["study_hours_per_week"] + 10
    drifted["lunch_program"] = np.where(np.arange(400) % 5 == 0, "standard", "free_or_reduced")
    thresholds = Thresholds()
    report = assess_version(
        "v1", recent_frame(drifted), reference=reference, held_out=HELD_OUT, thresholds=thresholds
    )
    assert {a.subject for a in report.alerts} == {"study_hours_per_week", "lunch_program"}
    assert report.drifting(thresholds) == ("study_hours_per_week", "lunch_program")
    assert "no outcomes recorded" in " ".join(report.notes) and report.quality is None

    calm = assess_version(
        "v1",
        recent_frame(synthetic.generate(400, 3)),
        reference=reference,
        held_out=HELD_OUT,
        thresholds=thresholds,
    )
    assert calm.alerts == () and max(d.psi for d in calm.drift) < 0.1


def test_without_reference_data_the_report_says_so_instead_of_failing() -> None:
    report = assess_version(
        "old-1",
        recent_frame(synthetic.generate(100, 3)),
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
    )
    assert report.drift == () and report.alerts == ()
    assert "no reference data for version old-1" in report.notes[0]


def test_too_few_rows_are_shown_but_not_judged() -> None:
    reference = synthetic.generate(500, 1)[list(FEATURE_COLUMNS)]
    few = synthetic.generate(20, 2)
    few["study_hours_per_week"] += 30
    report = assess_version(
        "v1",
        recent_frame(few, outcomes=True, shift=30),
        reference=reference,
        held_out=HELD_OUT,
        thresholds=Thresholds(),
    )
    assert report.alerts == () and report.drift and report.quality is not None
    assert any("only 20 recent inputs" in n for n in report.notes)
    assert any("only 20 predictions with outcomes" in n for n in report.notes)


def test_live_quality_alerts_against_the_held_out_figures() -> None:
    frame = synthetic.generate(200, 4)
    reference = frame[list(FEATURE_COLUMNS)]
    thresholds = Thresholds(rmse_ratio=1.25, auc_drop=0.05)
    worse = assess_version(
        "v1",
        recent_frame(frame, outcomes=True, shift=15),
        reference=reference,
        held_out=HELD_OUT,
        thresholds=thresholds,
    )
    # 15 points more for everyone: every score is off by 15, and the probabilities, made for
    # the old scores, now rank the passes worse.
    assert [a.subject for a in worse.alerts] == ["score_rmse", "pass_roc_auc"]
    assert worse.quality is not None and worse.quality.score_rmse == pytest.approx(15, abs=0.5)
    assert worse.quality.auc_drop is not None and worse.quality.auc_drop > 0.05
    same = assess_version(
        "v1",
        recent_frame(frame, outcomes=True),
        reference=reference,
        held_out=HELD_OUT,
        thresholds=thresholds,
    )
    assert same.alerts == ()


def test_the_summary_names_window_thresholds_findings_and_verdict() -> None:
    reference = synthetic.generate(1000, 1)[list(FEATURE_COLUMNS)]
    drifted = synthetic.generate(300, 2)
    drifted["previous_gpa"] = (drifted["previous_gpa"] - 1).clip(0, 4)
    version = assess_version(
        "v1",
        recent_frame(drifted, outcomes=True),
        reference=reference,
        held_out=HELD_OUT,
        thresholds=Thresholds(),
    )
    text = summary(MonitorReport(NOW, "the last 300 predictions", Thresholds(), (version,)))
    assert "window: the last 300 predictions" in text
    assert "thresholds: PSI >= 0.2; KS p-value < 0.001; live RMSE > 1.25 x held-out" in text
    assert "highest PSI: previous_gpa" in text and "live quality over 300 outcomes" in text
    assert "ALERT: previous_gpa drifted: PSI" in text
    assert text.endswith("result: 1 threshold(s) crossed")
    empty = summary(MonitorReport(NOW, "w", Thresholds(), ()))
    assert "nothing to compare" in empty and empty.endswith("no threshold crossed")


# --- the HTML report -------------------------------------------------------------------------


def test_the_html_report_is_self_contained_with_one_png_per_plot() -> None:
    reference = synthetic.generate(1000, 1)[list(FEATURE_COLUMNS)]
    with_outcomes = assess_version(
        "v1",
        recent_frame(synthetic.generate(200, 2), outcomes=True),
        reference=reference,
        held_out=HELD_OUT,
        thresholds=Thresholds(),
        held_out_calibration=(CalibrationBin(0.1, 0.2, 40, 0.15, 0.1),),
    )
    assert with_outcomes.quality is not None
    assert with_outcomes.quality.held_out_calibration[0].rows == 40
    unreferenced = assess_version(
        "v<0>",
        recent_frame(synthetic.generate(60, 3)),
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
    )
    report = MonitorReport(NOW, "w", Thresholds(), (with_outcomes, unreferenced))
    html = render(report, summary(report))
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)"', html)
    titles = plot_captions(report)
    assert len(titles) == 1 + len(FEATURE_COLUMNS) + 1  # PSI bars, histograms, calibration
    assert [alt for _, alt in images] == [t.replace("<", "&lt;") for t in titles]
    for data, _ in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"(src|href)=\"(?!data:)", html)  # nothing fetched from elsewhere
    assert "no reference data for version v&lt;0&gt;" in html  # escaped, not markup
    assert "Calibration of P(pass), version v1 (200 outcomes)" in titles


# --- the command line ------------------------------------------------------------------------


def test_since_takes_a_duration_or_a_time() -> None:
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_since("2026-11-20T06:00", NOW) == datetime(2026, 11, 20, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("last week", NOW)


def test_thresholds_come_from_flags_else_the_environment() -> None:
    env = {"STUDENTPERF_MONITOR_PSI": "0.3", "STUDENTPERF_MONITOR_AUC_DROP": "0.1"}
    config = parse_args([], env, NOW)
    assert (config.thresholds.psi, config.thresholds.auc_drop) == (0.3, 0.1)
    assert config.since == NOW - timedelta(days=7) and config.last is None
    config = parse_args(["--psi", "0.15", "--last", "500", "--retrain-on-alert"], env, NOW)
    assert config.thresholds.psi == 0.15 and (config.last, config.since) == (500, None)
    assert config.retrain_on_alert and config.window == "the last 500 predictions"
    assert parse_args([], {"STUDENTPERF_MONITOR_MAX_ROWS": "20"}, NOW).max_rows == 20


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--since", "yesterday"], {}),
        (["--last", "0"], {}),
        (["--max-rows", "0"], {}),
        (["--since", "1d", "--last", "5"], {}),
        (["--ks-pvalue", "2"], {}),
        ([], {"STUDENTPERF_MONITOR_PSI": "high"}),
    ],
)
def test_bad_usage_exits_with_status_2(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv, env, NOW)
    assert exit_info.value.code == 2
