"""Per-group figures (trainer.group_quality) on small hand-made frames with known answers."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from studentperf import group_quality_record as gqr
from trainer import group_quality as gq
from trainer.evaluate import expected_calibration_error

MARK = 50.0


def figure(
    name: str,
    actual: Sequence[float],
    predicted: Sequence[float],
    probability: Sequence[float],
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> float:
    """A figure on one group's rows; without `low` and `high`, no row had an interval."""
    none = [np.nan] * len(actual)
    value = gq.FIGURE_FUNCTIONS[name](
        gq.Rows(
            np.array(actual, dtype=float),
            np.array(predicted, dtype=float),
            np.array(probability, dtype=float),
            np.array(none if low is None else low, dtype=float),
            np.array(none if high is None else high, dtype=float),
            MARK,
        )
    )
    return float(value)


def test_score_rmse_and_mean_error() -> None:
    actual = [50, 60, 70, 80]
    predicted = [52, 58, 70, 84]  # errors +2, -2, 0, +4
    p = [0.5] * 4
    assert figure("score_rmse", actual, predicted, p) == pytest.approx(np.sqrt(24 / 4))
    assert figure("score_mean_error", actual, predicted, p) == pytest.approx(1.0)


def test_error_rates_count_at_risk_students_called_safe_and_passing_ones_flagged() -> None:
    # 20 students at risk (40 points), 5 of them called safe; 20 who passed, 4 of them flagged.
    actual = [40.0] * 20 + [60.0] * 20
    probability = [0.7] * 5 + [0.2] * 15 + [0.3] * 4 + [0.9] * 16
    predicted = actual
    assert figure("false_negative_rate", actual, predicted, probability) == pytest.approx(0.25)
    assert figure("false_positive_rate", actual, predicted, probability) == pytest.approx(0.2)
    assert figure("flagged_rate", actual, predicted, probability) == pytest.approx(19 / 40)
    # P(pass) exactly 0.5 counts as called safe, as Prediction.predicted_pass does.
    assert figure("flagged_rate", [40.0] * 3, [0.0] * 3, [0.5, 0.49, 0.51]) == pytest.approx(1 / 3)


def test_class_conditional_figures_are_undefined_below_the_minimum_of_that_class() -> None:
    few = gqr.MIN_CLASS_ROWS - 1
    actual = [40.0] * few + [60.0] * 30
    probability = [0.3] * few + [0.8] * 30
    assert np.isnan(figure("false_negative_rate", actual, actual, probability))
    assert np.isnan(figure("pass_roc_auc", actual, actual, probability))
    assert figure("false_positive_rate", actual, actual, probability) == 0.0
    enough = [40.0] * gqr.MIN_CLASS_ROWS + [60.0] * 30
    assert figure("false_negative_rate", enough, enough, [0.3] * 10 + [0.8] * 30) == 0.0


def test_roc_auc_is_sklearns_ties_included() -> None:
    rng = np.random.default_rng(3)
    actual = rng.uniform(20, 80, 300)
    probability = np.round(rng.uniform(0, 1, 300), 1)  # many ties
    expected = roc_auc_score(actual >= MARK, probability)
    assert figure("pass_roc_auc", list(actual), list(actual), list(probability)) == pytest.approx(
        expected
    )
    perfect = [40.0] * 10 + [60.0] * 10
    assert figure("pass_roc_auc", perfect, perfect, [0.1] * 10 + [0.9] * 10) == 1.0
    assert figure("pass_roc_auc", perfect, perfect, [0.5] * 20) == 0.5


def test_calibration_error_is_the_trainers() -> None:
    # Ten students all given 0.8, six of whom passed: off by 0.2 in the one bin.
    actual = [60.0] * 6 + [40.0] * 4
    assert figure("pass_ece", actual, actual, [0.8] * 10) == pytest.approx(0.2)
    rng = np.random.default_rng(4)
    scores = rng.uniform(20, 80, 500)
    probability = rng.uniform(0, 1, 500)
    probability[:3] = [0.0, 1.0, 0.5]  # the edges of the bins
    expected = expected_calibration_error(scores >= MARK, probability)
    assert figure("pass_ece", list(scores), list(scores), list(probability)) == pytest.approx(
        expected
    )


def test_every_figure_works_row_by_row_on_resamples() -> None:
    rng = np.random.default_rng(5)
    actual = rng.uniform(20, 80, (4, 60))
    predicted = actual + rng.normal(0, 5, (4, 60))
    probability = rng.uniform(0, 1, (4, 60))
    low, high = predicted - 6, predicted + 6
    low[:, :5] = high[:, :5] = np.nan  # predictions recorded without an interval
    rows = (actual, predicted, probability, low, high)
    for name, function in gq.FIGURE_FUNCTIONS.items():
        together = function(gq.Rows(*rows, MARK))
        one_by_one = [function(gq.Rows(*one, MARK)) for one in zip(*rows, strict=True)]
        np.testing.assert_allclose(together, one_by_one, err_msg=name)


def students(group: str, rows: int, error: float, start: int = 0) -> pd.DataFrame:
    """`rows` students of `group`, half at risk; predictions off by `error` points; P(pass)
    right for every second student of each class."""
    actual = np.where(np.arange(rows) % 2 == 0, 40.0, 60.0)
    probability = np.where((np.arange(rows) // 2) % 2 == 0, np.where(actual >= MARK, 0.9, 0.1), 0.5)
    return pd.DataFrame(
        {
            "gender": [group] * rows,
            "lunch_program": ["standard"] * rows,
            "parental_education": [None] * rows,
            "actual": actual,
            "predicted": actual + error,
            "probability": probability,
        },
        index=range(start, start + rows),
    )


def test_groups_gaps_and_groups_too_small_to_judge() -> None:
    frame = pd.concat(
        [
            students("female", 80, error=0.0),
            students("male", 60, error=10.0, start=80),
            students("other", gqr.MIN_GROUP_ROWS - 1, error=-30.0, start=140),
            students(None, 6, error=-30.0, start=300),  # type: ignore[arg-type]
        ]
    )
    found = gq.group_quality(
        frame,
        frame["actual"],
        frame["predicted"],
        frame["probability"],
        pass_mark=MARK,
        seed=1,
        resamples=400,
    )
    gender = found.attribute("gender")
    assert gender is not None
    rows = {g.group: (g.rows, g.judged) for g in gender.groups}
    assert rows == {
        "female": (80, True),
        "male": (60, True),
        "other": (gqr.MIN_GROUP_ROWS - 1, False),
        gq.NOT_GIVEN: (6, False),
    }
    figures = {g.group: g.figures for g in gender.groups}
    assert figures["male"]["score_rmse"] == pytest.approx(10.0)
    assert figures["male"]["score_mean_error"] == pytest.approx(10.0)
    assert figures["female"]["score_rmse"] == 0.0
    assert figures[gq.NOT_GIVEN]["false_negative_rate"] is None  # 3 at risk: undefined

    # The small group's -30 is shown but no part of a gap: the gap is male - female.
    rmse = gender.gap("score_rmse")
    assert rmse is not None
    assert (rmse.highest, rmse.lowest) == ("male", "female") and rmse.gap == pytest.approx(10.0)
    # Every male student is off by exactly 10, so every resample says 10: a real gap.
    assert rmse.interval_low == pytest.approx(10.0) and rmse.beyond_noise
    assert rmse.level == pytest.approx(0.95)  # two judged groups, one pair

    # Both groups call the same share safe, by construction: no gap beyond noise.
    flagged = gender.gap("flagged_rate")
    assert flagged is not None
    assert flagged.gap == pytest.approx(0.0, abs=0.02)
    assert flagged.interval_low <= 0 <= flagged.interval_high and not flagged.beyond_noise

    # One group only, or none judged: no gaps at all.
    lunch, education = found.attribute("lunch_program"), found.attribute("parental_education")
    assert lunch is not None and lunch.gaps == ()
    assert education is not None and education.gaps == ()
    assert [g.group for g in education.groups] == [gq.NOT_GIVEN]

    again = gq.group_quality(
        frame,
        frame["actual"],
        frame["predicted"],
        frame["probability"],
        pass_mark=MARK,
        seed=1,
        resamples=400,
    )
    assert again == found
    stored = json.loads(json.dumps(found.as_dict(), allow_nan=False))
    assert gqr.GroupQuality.from_dict(stored) == found


def test_many_groups_widen_the_interval() -> None:
    frame = pd.concat(
        [
            students("female", 60, error=0.0),
            students("male", 60, error=1.0, start=60),
            students("other", 60, error=2.0, start=120),
        ]
    )
    found = gq.group_quality(
        frame, frame["actual"], frame["predicted"], frame["probability"], pass_mark=MARK, seed=2
    )
    gender = found.attribute("gender")
    assert gender is not None
    gap = gender.gap("score_mean_error")
    assert gap is not None and (gap.highest, gap.lowest) == ("other", "female")
    assert gap.level == pytest.approx(1 - 0.05 / 3)  # three pairs of judged groups


def test_the_table_says_which_groups_are_too_small_and_which_gaps_are_noise() -> None:
    frame = pd.concat(
        [
            students("female", 60, 0.0),
            students("male", 60, 3.0, start=60),
            students("other", 10, 9.0, start=120),
        ]
    )
    table = gq.format_group_quality(
        gq.group_quality(
            frame, frame["actual"], frame["predicted"], frame["probability"], pass_mark=MARK, seed=3
        )
    )
    print(table)
    lines = table.splitlines()
    assert any(
        line.split()[0] == "other" and f"too small to judge: < {gqr.MIN_GROUP_ROWS} rows" in line
        for line in lines
    )
    assert any(line.split()[:2] == ["gap", "RMSE"] and "a real gap" in line for line in lines)
    assert any(line.split()[:2] == ["gap", "flagged"] and "within noise" in line for line in lines)


def test_large_groups_are_resampled_in_part_with_the_spread_of_the_whole() -> None:
    # Two groups of 10,000 (above BOOTSTRAP_ROWS): errors Normal(0, 5) and Normal(1, 5). The
    # mean error's gap, 1 point, has a standard error of 5 * sqrt(2 / 10,000) = 0.0707.
    n = 10_000
    assert n > gq.BOOTSTRAP_ROWS
    rng = np.random.default_rng(6)
    actual = rng.uniform(20, 80, 2 * n)
    error = np.concatenate([rng.normal(0, 5, n), rng.normal(1, 5, n)])
    frame = pd.DataFrame(
        {
            "gender": ["female"] * n + ["male"] * n,
            "lunch_program": [None] * (2 * n),
            "parental_education": [None] * (2 * n),
        }
    )
    found = gq.group_quality(
        frame,
        actual,
        actual + error,
        rng.uniform(0, 1, 2 * n),
        pass_mark=MARK,
        seed=6,
        attributes=("gender",),
    )
    gender = found.attribute("gender")
    assert gender is not None
    bias = gender.gap("score_mean_error")
    assert bias is not None and bias.highest == "male"
    width = bias.interval_high - bias.interval_low
    expected = 2 * 1.959964 * 5 * np.sqrt(2 / n)
    print(f"mean error gap {bias.gap:.3f}, interval width {width:.4f}, expected {expected:.4f}")
    assert width == pytest.approx(expected, rel=0.15)
    assert bias.interval_low < bias.gap < bias.interval_high
