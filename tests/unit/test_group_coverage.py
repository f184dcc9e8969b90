"""Score-interval coverage per group of students: the figure, its gap, where it is undefined, the
records written before it, and how the gate and the monitor compare it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from studentperf import group_quality_record as gqr
from studentperf.score_interval import ScoreInterval
from trainer import group_quality as gq
from trainer.monitor.assess import Thresholds, assess_version
from trainer.monitor.groups import live_groups
from trainer.promote import GAP_THRESHOLDS, gap_widenings, not_compared

MARK = 50.0
ROWS = 400  # per group
INTERVAL = ScoreInterval(13.0, 0.9)  # one half-width for both groups


def coverage(actual: list[float], low: list[float], high: list[float]) -> float:
    n = len(actual)
    value = gq.interval_coverage(
        gq.Rows(np.array(actual), np.zeros(n), np.zeros(n), np.array(low), np.array(high), MARK)
    )
    return float(value)


def test_coverage_is_the_share_inside_ends_included_among_rows_with_an_interval() -> None:
    enough = gqr.MIN_CLASS_ROWS
    # 10 inside (two of them on an end), 2 outside, 3 recorded without an interval.
    actual = [50.0] * 8 + [40.0, 60.0] + [30.0, 70.0] + [50.0] * 3
    low = [45.0] * 8 + [40.0, 40.0] + [45.0, 45.0] + [np.nan] * 3
    high = [55.0] * 8 + [60.0, 60.0] + [55.0, 55.0] + [np.nan] * 3
    assert coverage(actual, low, high) == pytest.approx(10 / 12)
    # Fewer rows with an interval than MIN_CLASS_ROWS, or none at all: undefined, not guessed.
    few = enough - 1
    assert np.isnan(coverage([50.0] * 20, [45.0] * few + [np.nan] * 11, [55.0] * 20))
    assert np.isnan(coverage([50.0] * 20, [np.nan] * 20, [np.nan] * 20))


def spread_groups(seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Two genders, ROWS each, whose predictions miss by sd 5 (female) and sd 10 (male)."""
    rng = np.random.default_rng(seed)
    actual = rng.uniform(30, 70, 2 * ROWS)
    error = np.concatenate([rng.normal(0, 5, ROWS), rng.normal(0, 10, ROWS)])
    frame = pd.DataFrame(
        {
            "gender": ["female"] * ROWS + ["male"] * ROWS,
            "lunch_program": ["standard"] * (2 * ROWS),
            "parental_education": [None] * (2 * ROWS),
        }
    )
    return frame, actual, actual + error


def measured(
    frame: pd.DataFrame,
    actual: np.ndarray,
    predicted: np.ndarray,
    seed: int,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    stated: float | None = None,
    resamples: int = gqr.RESAMPLES,
) -> gqr.GroupQuality:
    """`group_quality` of `spread_groups`' students, served the score intervals `low`-`high`
    that state `stated` (None: no intervals); P(pass) 0.5 for all: no figure here reads it."""
    return gq.group_quality(
        frame,
        actual,
        predicted,
        np.full(2 * ROWS, 0.5),
        pass_mark=MARK,
        seed=seed,
        interval_low=low,
        interval_high=high,
        stated_coverage=stated,
        resamples=resamples,
    )


def test_one_width_for_everyone_under_covers_the_group_whose_scores_spread_wider() -> None:
    frame, actual, predicted = spread_groups(7)
    # One half-width for both groups: the 90 % quantile of all their misses, as a conformal
    # fit on rows like these would choose.
    interval = ScoreInterval(float(np.quantile(np.abs(predicted - actual), 0.9)), 0.9)
    low, high = interval.bounds(predicted)
    assert np.mean((actual >= low) & (actual <= high)) == pytest.approx(0.9, abs=0.01)
    found = measured(frame, actual, predicted, 7, low, high, interval.coverage)
    gender = found.attribute("gender")
    assert gender is not None and found.stated_coverage == 0.9
    covered = {g.group: g.figures["interval_coverage"] for g in gender.groups}
    print(f"half-width {interval.half_width:.2f}, coverage per group {covered}")
    # Overall as stated, yet male scores lie inside far less often than 90 %, female nearly
    # always: sd 10 against a half-width of about 14 covers about 84 %, sd 5 over 99 %.
    male, female = covered["male"], covered["female"]
    assert male is not None and female is not None
    assert male < 0.86 and female > 0.98
    gap = gender.gap("interval_coverage")
    assert gap is not None and (gap.highest, gap.lowest) == ("female", "male")
    assert gap.gap == pytest.approx(female - male)
    assert gap.beyond_noise and gap.interval_low > 0.1 and gap.level == pytest.approx(0.95)

    table = gq.format_group_quality(found)
    print(table)
    assert "covered" in table.splitlines()[0] and "(stated coverage 90%" in table
    line = next(x for x in table.splitlines() if x.split()[:2] == ["gap", "covered"])
    assert "(female - male)" in line and "a real gap" in line
    assert f"(stated 90%, male {male:.1%})" in line

    stored = json.loads(json.dumps(found.as_dict(), allow_nan=False))
    assert gqr.GroupQuality.from_dict(stored) == found


def test_without_intervals_coverage_is_undefined_and_has_no_gap() -> None:
    frame, actual, predicted = spread_groups(8)
    bare = measured(frame, actual, predicted, 8, resamples=200)
    gender = bare.attribute("gender")
    assert gender is not None and bare.stated_coverage is None
    assert all(g.figures["interval_coverage"] is None for g in gender.groups)
    assert gender.gap("interval_coverage") is None and not bare.predates("interval_coverage")
    assert "stated coverage" not in gq.format_group_quality(bare)

    # Live, the males' predictions were recorded without their interval (NULL): their figure
    # is undefined, the females' is not, and one group alone makes no gap.
    low, high = INTERVAL.bounds(predicted)
    low[ROWS:] = high[ROWS:] = np.nan
    part = measured(frame, actual, predicted, 8, low, high, INTERVAL.coverage, resamples=200)
    gender = part.attribute("gender")
    assert gender is not None
    covered = {g.group: g.figures["interval_coverage"] for g in gender.groups}
    assert covered["male"] is None and covered["female"] is not None
    assert gender.gap("interval_coverage") is None

    with pytest.raises(ValueError, match="give both or neither"):
        gq.group_quality(
            frame, actual, predicted, predicted, pass_mark=MARK, seed=8, interval_low=low
        )


def old_record() -> dict[str, object]:
    """A record as metadata.json kept it before interval coverage was measured per group."""
    before = [f for f in gq.FIGURES if f != "interval_coverage"]
    female, male = dict.fromkeys(before, 0.1) | {"score_rmse": 7}, dict.fromkeys(before, 0.1)
    return {
        "rows": 200,
        "seed": 3,
        "min_group_rows": 50,
        "min_class_rows": 10,
        "resamples": 2000,
        "attributes": [
            {
                "attribute": "gender",
                "groups": [
                    {"group": "female", "rows": 100, "judged": True, "figures": female},
                    {
                        "group": "male",
                        "rows": 100,
                        "judged": True,
                        "figures": male | {"score_rmse": 8},
                    },
                ],
                "gaps": [
                    {
                        "figure": "score_rmse",
                        "gap": 1.0,
                        "highest": "male",
                        "lowest": "female",
                        "interval_low": -0.5,
                        "interval_high": 2.5,
                        "level": 0.95,
                        "beyond_noise": False,
                    }
                ],
            }
        ],
    }


def test_a_record_from_before_interval_coverage_still_reads_and_prints() -> None:
    found = gqr.GroupQuality.from_dict(old_record())
    assert found.stated_coverage is None and found.predates("interval_coverage")
    assert not found.predates("score_rmse")
    gender = found.attribute("gender")
    assert gender is not None and gender.gap("score_rmse") is not None
    assert "interval_coverage" not in gender.groups[0].figures  # as stored: nothing guessed
    table = gq.format_group_quality(found)
    assert table.splitlines()[2].split()[-1] == "-"  # female's covered column
    assert gqr.GroupQuality.from_dict(found.as_dict()) == found


def test_the_gate_compares_coverage_gaps_only_with_a_record_that_measured_them() -> None:
    frame, actual, predicted = spread_groups(9)
    low, high = INTERVAL.bounds(predicted)
    candidate = measured(frame, actual, predicted, 9, low, high, INTERVAL.coverage)
    wide = candidate.attribute("gender").gap("interval_coverage")  # type: ignore[union-attr]
    assert wide is not None and wide.interval_low > GAP_THRESHOLDS["interval_coverage"]

    # Against a record from before the figure: not compared (its gap then is unknown), and said.
    old = gqr.GroupQuality.from_dict(old_record())
    assert [w.gap.figure for w in gap_widenings(candidate, old, GAP_THRESHOLDS)] == ["score_rmse"]
    assert not_compared(candidate, old) == ("interval_coverage",)

    # Against a version that served every group alike: the widened coverage gap is refused.
    alike = actual + np.random.default_rng(9).normal(0, 5, 2 * ROWS)
    even = measured(frame, actual, alike, 9, *INTERVAL.bounds(alike), INTERVAL.coverage)
    assert not_compared(candidate, even) == ()
    widened = {w.gap.figure: w for w in gap_widenings(candidate, even, GAP_THRESHOLDS)}
    assert widened["interval_coverage"].limit == 0.10
    assert "gender interval_coverage gap" in widened["interval_coverage"].describe()


def live(actual: np.ndarray, predicted: np.ndarray, frame: pd.DataFrame) -> pd.DataFrame:
    """Predictions with outcomes as trainer.monitor.data reads them, each with its interval."""
    low, high = INTERVAL.bounds(predicted)
    return frame.assign(
        model_version="v1",
        predicted_at=pd.Timestamp("2026-12-03T18:00:00Z"),
        predicted_final_score=predicted,
        pass_probability=0.5,
        pass_mark=MARK,
        score_interval_low=low,
        score_interval_high=high,
        interval_coverage=INTERVAL.coverage,
        final_score=actual,
    )


def test_the_monitor_measures_live_coverage_per_group_and_alerts_on_a_widened_gap() -> None:
    frame, actual, predicted = spread_groups(10)
    calm = actual + np.random.default_rng(10).normal(0, 5, 2 * ROWS)
    at_training = live_groups(live(actual, calm, frame), recorded=None, thresholds=GAP_THRESHOLDS)
    assert at_training.live.stated_coverage == 0.9

    report = assess_version(
        "v1",
        live(actual, predicted, frame),
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
        held_out_groups=at_training.live,
    )
    assert report.groups is not None
    gap = report.groups.live.attribute("gender").gap("interval_coverage")  # type: ignore[union-attr]
    assert gap is not None and gap.lowest == "male" and gap.beyond_noise
    subjects = {a.subject for a in report.alerts}
    assert "gender interval_coverage" in subjects, subjects

    # Against a training-time record from before the figure: shown, not compared, and a note.
    older = assess_version(
        "v1",
        live(actual, predicted, frame),
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
        held_out_groups=gqr.GroupQuality.from_dict(old_record()),
    )
    assert "gender interval_coverage" not in {a.subject for a in older.alerts}
    assert any("per-group interval_coverage not recorded at training" in n for n in older.notes)

    # Predictions recorded without an interval (NULL columns): undefined, no gap, no alert.
    nulls = live(actual, predicted, frame).assign(
        score_interval_low=np.nan, score_interval_high=np.nan, interval_coverage=np.nan
    )
    bare = live_groups(nulls, recorded=at_training.live, thresholds=GAP_THRESHOLDS)
    gender = bare.live.attribute("gender")
    assert gender is not None and bare.live.stated_coverage is None
    assert all(g.figures["interval_coverage"] is None for g in gender.groups)
    assert gender.gap("interval_coverage") is None
