"""`make monitor`'s live quality per group of students, on fixed synthetic predictions and outcomes.

Predictions are each student's calm score plus noise of sd 7 (about what a trained model misses
by); outcomes are the calm scores, or the scores with unfairness planted for the students on
free or reduced lunch (trainer.synthetic). The version's training-time figures are the same
measure on another calm sample.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from studentperf.features import FEATURE_COLUMNS
from studentperf.group_quality_record import GroupQuality
from trainer import synthetic
from trainer.group_quality import group_quality
from trainer.monitor.assess import MonitorReport, Thresholds, assess_version, summary
from trainer.monitor.cli import parse_args
from trainer.monitor.groups import live_groups, recorded_groups
from trainer.monitor.report_html import render
from trainer.promote import GAP_THRESHOLDS

ROWS = 1500
UNFAIR = "lunch_program=free_or_reduced"
NOW = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)


def predictions(seed: int, unfair_group: str | None = None) -> pd.DataFrame:
    """One version's predictions with outcomes, as trainer.monitor.data reads them."""
    calm = synthetic.generate(ROWS, seed)
    outcome = synthetic.generate(ROWS, seed, unfair_group)
    rng = np.random.default_rng(seed)
    predicted = (calm["final_score"] + rng.normal(0, 7, ROWS)).clip(0, 100)
    frame = calm[list(FEATURE_COLUMNS)].copy()
    frame["model_version"] = "v1"
    frame["predicted_at"] = pd.Timestamp(NOW)
    frame["predicted_final_score"] = predicted
    frame["pass_probability"] = 1 / (1 + np.exp(-(predicted - 50) / 5))
    frame["pass_mark"] = 50.0
    frame["final_score"] = outcome["final_score"]
    return frame


@pytest.fixture(scope="module")
def at_training() -> GroupQuality:
    frame = predictions(seed=1)
    return group_quality(
        frame,
        frame["final_score"],
        frame["predicted_final_score"],
        frame["pass_probability"],
        pass_mark=50,
        seed=1,
    )


def test_planted_unfairness_alerts_naming_the_attribute_group_and_figure(
    at_training: GroupQuality,
) -> None:
    report = assess_version(
        "v1",
        predictions(seed=2, unfair_group=UNFAIR),
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
        held_out_groups=at_training,
    )
    subjects = {a.subject for a in report.alerts}
    print("alerts:", *(a.message for a in report.alerts), sep="\n  ")
    assert "lunch_program score_rmse" in subjects
    assert all(s.startswith("lunch_program ") for s in subjects), subjects
    rmse = next(a for a in report.alerts if a.subject == "lunch_program score_rmse")
    assert "(free_or_reduced vs standard" in rmse.message and "at training" in rmse.message
    assert report.groups is not None and report.groups.live.rows == ROWS
    gap = report.groups.live.attribute("lunch_program").gap("score_rmse")  # type: ignore[union-attr]
    assert gap is not None and gap.highest == "free_or_reduced" and gap.interval_low > 5


def test_calm_outcomes_raise_no_group_alert(at_training: GroupQuality) -> None:
    report = assess_version(
        "v1",
        predictions(seed=3),
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
        held_out_groups=at_training,
    )
    assert report.alerts == () and report.groups is not None and report.groups.widened == ()


def test_groups_too_small_are_shown_and_left_out(at_training: GroupQuality) -> None:
    found = live_groups(
        predictions(seed=3), recorded=at_training, thresholds=GAP_THRESHOLDS, max_rows=ROWS
    )
    gender = found.live.attribute("gender")
    assert gender is not None
    other = next(g for g in gender.groups if g.group == "other")
    assert other.rows < 50 and not other.judged  # 2 % of the students
    assert all("other" not in (g.highest, g.lowest) for g in gender.gaps)
    text = summary(
        MonitorReport(
            NOW,
            "test",
            Thresholds(),
            (assess_version("v1", predictions(seed=3), reference=None, held_out=None,
                            thresholds=Thresholds(), held_out_groups=at_training),),
        )
    )  # fmt: skip
    assert "live quality per group of students over 1500 outcomes" in text
    assert "(too small to judge: < 50 rows)" in text and "gaps at training" in text


def test_the_gate_thresholds_decide_and_a_wider_one_silences_the_alert(
    at_training: GroupQuality,
) -> None:
    unfair = predictions(seed=2, unfair_group=UNFAIR)
    loose = dict(GAP_THRESHOLDS) | {"score_rmse": 50.0, "score_mean_error": 50.0}
    loose |= {"pass_roc_auc": 1.0, "pass_ece": 1.0, "false_negative_rate": 1.0}
    loose |= {"false_positive_rate": 1.0, "flagged_rate": 1.0}
    found = live_groups(unfair, recorded=at_training, thresholds=loose)
    assert found.widened == ()
    # Without training-time figures nothing is compared, so nothing alerts.
    report = assess_version(
        "v1", unfair, reference=None, held_out=None, thresholds=Thresholds(), held_out_groups=None
    )
    assert report.alerts == ()
    assert any("no per-group figures from training" in n for n in report.notes)


def test_above_the_row_limit_a_seeded_sample_is_used() -> None:
    frame = predictions(seed=4)
    first = live_groups(frame, recorded=None, thresholds=GAP_THRESHOLDS, max_rows=1000)
    again = live_groups(frame, recorded=None, thresholds=GAP_THRESHOLDS, max_rows=1000)
    assert first.sampled and first.live.rows == 1000 and first.outcomes == ROWS
    assert first.live == again.live  # the same window, the same sample and intervals


def test_recorded_figures_are_read_back_or_ignored(at_training: GroupQuality) -> None:
    assert recorded_groups(at_training.as_dict()) == at_training
    assert recorded_groups(None) is None and recorded_groups({"rows": 3}) is None


def test_the_html_report_has_a_table_per_attribute_and_the_alert(
    at_training: GroupQuality,
) -> None:
    report = assess_version(
        "v1",
        predictions(seed=2, unfair_group=UNFAIR),
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
        held_out_groups=at_training,
    )
    page = render(MonitorReport(NOW, "test", Thresholds(), (report,)), "summary")
    assert "<h3>Live quality per group of students</h3>" in page
    assert all(f"<h4>{a}</h4>" in page for a in ("gender", "lunch_program", "parental_education"))
    assert "ALERT: wider than at training" in page and "too small to judge (&lt; 50 rows)" in page


def test_gap_thresholds_come_from_the_gates_variable_and_bad_ones_exit_2() -> None:
    env = {"STUDENTPERF_GROUP_GAP_THRESHOLDS": "score_rmse=1.5"}
    config = parse_args([], env, NOW)
    assert config.thresholds.group_gaps["score_rmse"] == 1.5
    assert config.thresholds.group_gaps["flagged_rate"] == GAP_THRESHOLDS["flagged_rate"]
    assert "RMSE 1.5" in config.thresholds.describe()
    flag = parse_args(["--gap-thresholds", "flagged_rate=0.2", "--max-group-rows", "5000"], {}, NOW)
    assert flag.thresholds.group_gaps["flagged_rate"] == 0.2 and flag.max_group_rows == 5000
    for argv in (["--gap-thresholds", "rmse=2"], ["--max-group-rows", "10"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv, {}, NOW)
        assert exit_info.value.code == 2
