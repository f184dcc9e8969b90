"""Live coverage of the score intervals in the monitor: the count on known answers, and the
alert when recorded outcomes fall outside their ranges more often than the stated level allows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from trainer.monitor.assess import (
    MonitorReport,
    Thresholds,
    VersionReport,
    assess_version,
    summary,
)
from trainer.monitor.coverage import LiveCoverage, live_coverage

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def test_coverage_counts_outcomes_inside_their_range_ends_included() -> None:
    found = live_coverage(
        actual=[10.0, 20.0, 30.0, 40.0, 35.0],
        low=[5.0, 25.0, 25.0, np.nan, 25.0],
        high=[15.0, 30.0, 35.0, np.nan, 35.0],
        stated=[0.8, 0.8, 0.8, np.nan, 0.8],
    )
    # 10 in [5, 15], 20 not in [25, 30], 30 in [25, 35], 35 on the end of [25, 35]; the row
    # without an interval is left out.
    assert found == LiveCoverage(rows=4, covered=3, stated=0.8)
    assert found.share == 0.75
    assert live_coverage([10.0], [np.nan], [np.nan], [np.nan]) is None


def test_binomial_pvalue_on_a_known_answer() -> None:
    # None of 5 inside at a stated 80 %: the chance of that is 0.2 ** 5.
    assert LiveCoverage(rows=5, covered=0, stated=0.8).pvalue == pytest.approx(0.2**5)
    assert LiveCoverage(rows=100, covered=80, stated=0.8).pvalue > 0.5


def predictions(rows: int, inside: int) -> pd.DataFrame:
    """`rows` predictions of 50 with the range 40-60 and an outcome, `inside` of them in it."""
    outcome = np.where(np.arange(rows) < inside, 55.0, 70.0)
    return pd.DataFrame(
        {
            "model_version": "v1",
            "predicted_at": pd.date_range(NOW - timedelta(hours=1), periods=rows, freq="s"),
            "predicted_final_score": 50.0,
            "pass_probability": np.where(outcome >= 50, 0.7, 0.3),
            "pass_mark": 50.0,
            "score_interval_low": 40.0,
            "score_interval_high": 60.0,
            "interval_coverage": 0.8,
            "final_score": outcome,
            # The groups of students the monitor's per-group figures read: one group each.
            "gender": "female",
            "lunch_program": "standard",
            "parental_education": "high_school",
        }
    )


@pytest.mark.parametrize(
    ("rows", "inside", "alerts"),
    [
        (200, 160, False),  # 80 %: as stated
        (200, 148, False),  # 74 %: 6 points low, but chance does that (p 0.024 > 0.01)
        (200, 130, True),  # 65 %: far below, p < 0.0001
        (20, 10, False),  # 50 %, but fewer outcomes than min_outcomes (30): shown, not judged
    ],
)
def test_coverage_alerts_only_when_far_and_sure_below_the_stated_level(
    rows: int, inside: int, alerts: bool
) -> None:
    thresholds = Thresholds()
    report = assess_version(
        "v1", predictions(rows, inside), reference=None, held_out=None, thresholds=thresholds
    )
    assert report.coverage == LiveCoverage(rows=rows, covered=inside, stated=0.8)
    assert report.coverage is not None
    print(f"{rows} outcomes, {inside} inside: {report.coverage.describe()}")
    subjects = [a.subject for a in report.alerts]
    assert subjects == (["interval_coverage"] if alerts else [])
    assert "live interval coverage" in summary_of(report, thresholds)


def summary_of(report: VersionReport, thresholds: Thresholds) -> str:
    return summary(MonitorReport(NOW, "test window", thresholds, (report,)))


def test_a_version_without_intervals_reports_no_coverage() -> None:
    old = predictions(100, 0).drop(
        columns=["score_interval_low", "score_interval_high", "interval_coverage"]
    )
    report = assess_version("v0", old, reference=None, held_out=None, thresholds=Thresholds())
    assert report.coverage is None and report.alerts == ()
    nulls = predictions(100, 0).assign(
        score_interval_low=np.nan, score_interval_high=np.nan, interval_coverage=np.nan
    )
    report = assess_version("v0", nulls, reference=None, held_out=None, thresholds=Thresholds())
    assert report.coverage is None and report.alerts == ()
