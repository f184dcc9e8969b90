"""The score interval and the pass calibration: the conformal arithmetic on known answers, the
coverage it reaches on synthetic data, the calibration map, and what the artifact keeps."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from inference_service.fast_model import feature_table, probe_rows
from inference_service.model import load_served_model
from studentperf.model_artifact import load_artifact, save_artifact
from studentperf.score_interval import PassCalibration, ScoreInterval
from trainer import synthetic
from trainer.__main__ import parse_args
from trainer.calibration import fit_calibration, judge
from trainer.conformal import coverage_on, fit_interval
from trainer.fit import fit_and_evaluate
from trainer.pipeline import (
    Candidate,
    boosted_classifier,
    boosted_regressor,
    logistic,
    ridge,
)
from trainer.train import run


class Constant:
    """A 'fitted pipeline' that predicts `value` for every row."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, features: Any) -> npt.NDArray[np.float64]:
        return np.full(len(features), self.value)


def rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({"x": np.zeros(n)})


@pytest.mark.parametrize(
    ("coverage", "expected"),
    [
        # Residuals 1..10: the ceil((10 + 1) * coverage)-th smallest.
        (0.8, 9.0),  # ceil(8.8) = 9
        (0.9, 10.0),  # ceil(9.9) = 10
        (0.5, 6.0),  # ceil(5.5) = 6
        (0.7, 8.0),  # ceil(7.7) = 8
    ],
)
def test_half_width_is_the_conformal_quantile_of_the_absolute_errors(
    coverage: float, expected: float
) -> None:
    scores = 50.0 + np.array([1, -2, 3, -4, 5, -6, 7, -8, 9, -10], dtype=float)
    found = fit_interval(Constant(50.0), rows(10), scores, coverage=coverage)
    assert found == ScoreInterval(half_width=expected, coverage=coverage)


def test_errors_are_those_of_the_served_clipped_score() -> None:
    # The pipeline says 120, the service serves 100: the errors are 0, 1, ..., 9 points.
    scores = 100.0 - np.arange(10, dtype=float)
    assert fit_interval(Constant(120.0), rows(10), scores, coverage=0.8).half_width == 8.0


def test_too_few_rows_for_the_level_give_the_whole_range() -> None:
    # ceil((3 + 1) * 0.8) = 4 > 3 rows: no finite half-width holds 80 % conformally.
    found = fit_interval(Constant(50.0), rows(3), np.array([49.0, 51.0, 50.0]), coverage=0.8)
    assert found.half_width == 100.0


def test_bounds_are_clipped_to_the_score_range_and_coverage_counts_the_ends() -> None:
    interval = ScoreInterval(half_width=10.0, coverage=0.8)
    low, high = interval.bounds([5.0, 50.0, 97.0])
    assert low.tolist() == [0.0, 40.0, 87.0]
    assert high.tolist() == [15.0, 60.0, 100.0]
    covered, width = coverage_on(interval, [5.0, 50.0, 97.0, 50.0], [15.0, 39.9, 100.0, 61.0])
    assert covered == 0.5  # 15 and 100 on the ends are inside; 39.9 and 61 outside
    assert width == pytest.approx((15 + 20 + 13 + 20) / 4)


def test_bounds_of_plain_floats_are_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(17)
    scores = [*rng.uniform(-20.0, 120.0, 2000).tolist(), 0.0, 100.0, -0.0, float("nan")]
    for half_width in (0.0, 3.7, 12.25, 1e-9, 150.0):
        interval = ScoreInterval(half_width=half_width, coverage=0.9)
        low, high = interval.bounds(scores)
        plain_low, plain_high = interval.bounds_of(scores)
        assert all(isinstance(x, float) for x in plain_low + plain_high)
        # Compared as bytes: equal floats, NaN where numpy has NaN, the same sign of zero.
        assert np.array(plain_low).tobytes() == low.tobytes()
        assert np.array(plain_high).tobytes() == high.tobytes()


# Each run's test coverage varies by chance: about 2.5 points (one standard deviation) from the
# 500 validation rows the half-width comes from and the 1,000 test rows that judge it. So each
# run may be off by up to 8 points (3 standard deviations), while the mean deviation over the
# runs, whose standard deviation is about 0.7 points, must be within 2.
LEVEL_RUNS = [(0.8, seed) for seed in range(1, 7)] + [(0.6, 7), (0.6, 8), (0.9, 9), (0.9, 10)]


def test_test_split_coverage_is_within_a_few_points_of_the_stated_level() -> None:
    deviations = []
    for coverage, seed in LEVEL_RUNS:
        found = fit_and_evaluate(
            synthetic.generate(5000, seed),
            pass_mark=50.0,
            seed=seed,
            score_options=[ridge(1.0)],
            pass_options=[logistic(1.0)],
            coverage=coverage,
        )
        report = found.interval
        print(
            f"stated {coverage:.0%}, seed {seed}: half-width {report.interval.half_width:.2f}, "
            f"test coverage {report.test_coverage:.3f} of {report.test_rows}"
        )
        assert report.interval.coverage == coverage
        assert report.test_rows == 1000 and report.validation_rows == 500
        # The model keeps the same interval it was judged with.
        assert found.model.score_interval == report.interval
        deviations.append(report.test_coverage - coverage)
    mean = float(np.mean(deviations))
    print(f"mean deviation from the stated level over {len(deviations)} runs: {mean:+.4f}")
    assert max(abs(d) for d in deviations) <= 0.08
    assert abs(mean) <= 0.02


def test_isotonic_map_on_known_points() -> None:
    calibration = fit_calibration([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    # Pool-adjacent-violators: 0, (1 + 0) / 2, (1 + 0) / 2, 1.
    assert calibration.apply([0.1, 0.2, 0.3, 0.4]).tolist() == [0.0, 0.5, 0.5, 1.0]
    # Flat beyond the ends, straight lines between knots.
    np.testing.assert_allclose(calibration.apply([0.0, 0.35, 0.9]), [0.0, 0.75, 1.0])


def test_calibration_is_kept_only_when_it_lowers_the_test_error() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.05, 0.95, 4000)
    passed = (rng.uniform(size=4000) < truth).astype(int)
    squashed = 0.5 + (truth - 0.5) * 0.3  # a classifier far too timid
    calibration = fit_calibration(squashed[:2000], passed[:2000])
    timid = judge(calibration, squashed[2000:], passed[2000:], validation_rows=2000)
    print(f"timid classifier: ECE {timid.ece_before:.4f} before, {timid.ece_after:.4f} after")
    assert timid.applied and timid.ece_after < timid.ece_before / 3
    honest = judge(fit_calibration(truth[:200], passed[:200]), truth[2000:], passed[2000:], 200)
    print(f"honest classifier: ECE {honest.ece_before:.4f} before, {honest.ece_after:.4f} after")
    # A map fitted on few rows of an already calibrated classifier only adds noise: refused.
    assert not honest.applied


def test_artifact_keeps_interval_and_calibration_and_an_older_one_loads_without(
    tmp_path: Path,
) -> None:
    frame = synthetic.generate(800, 2)
    model = fit_and_evaluate(
        frame, pass_mark=50.0, seed=2, score_options=[ridge(1.0)], pass_options=[logistic(1.0)]
    ).model
    calibration = PassCalibration(knots_in=(0.0, 1.0), knots_out=(0.2, 0.8))
    saved = save_artifact(
        tmp_path / "new",
        replace(model, pass_calibration=calibration),
        fingerprint="a" * 16,
        details={},
    )
    loaded = load_artifact(saved).model
    assert loaded.score_interval == model.score_interval is not None
    assert loaded.pass_calibration == calibration
    features = frame.drop(columns=["final_score"]).head(5)
    raw = model.classifier.predict_proba(features)[:, 1]
    np.testing.assert_allclose(loaded.pass_probabilities(features), 0.2 + 0.6 * raw)

    older = save_artifact(
        tmp_path / "old",
        replace(model, score_interval=None, pass_calibration=None),
        fingerprint="b" * 16,
        details={},
    )
    found = load_artifact(older).model
    assert found.score_interval is None and found.pass_calibration is None
    np.testing.assert_allclose(found.pass_probabilities(features), raw)


@pytest.mark.parametrize(
    ("score", "passing"),
    [
        (ridge(1.0), logistic(1.0)),
        (boosted_regressor(3, max_iter=20), boosted_classifier(3, max_iter=20)),
    ],
)
def test_compiled_path_serves_what_the_pipelines_give_calibrated(
    tmp_path: Path, score: Candidate, passing: Candidate
) -> None:
    frame = synthetic.generate(800, 4)
    model = fit_and_evaluate(
        frame, pass_mark=50.0, seed=4, score_options=[score], pass_options=[passing]
    ).model
    calibration = PassCalibration(knots_in=(0.0, 0.3, 0.7, 1.0), knots_out=(0.05, 0.2, 0.9, 0.97))
    saved = save_artifact(
        tmp_path, replace(model, pass_calibration=calibration), fingerprint="c" * 16, details={}
    )
    served = load_served_model(str(saved), expected_pass_mark=50.0)
    assert served.compiled
    assert served.score_interval == model.score_interval is not None
    rows = probe_rows()
    table = feature_table(rows)
    scores, probabilities = served.predict(rows)
    pipelines = load_artifact(saved).model
    np.testing.assert_allclose(scores, pipelines.predict_scores(table), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        probabilities, pipelines.pass_probabilities(table), rtol=1e-9, atol=1e-9
    )
    raw = pipelines.classifier.predict_proba(table)[:, 1]
    assert np.max(np.abs(np.asarray(probabilities) - raw)) > 0.05  # the map was applied


def test_serving_a_model_with_interval_and_calibration_never_imports_mapie(tmp_path: Path) -> None:
    frame = synthetic.generate(800, 6)
    model = fit_and_evaluate(
        frame, pass_mark=50.0, seed=6, score_options=[ridge(1.0)], pass_options=[logistic(1.0)]
    ).model
    calibration = PassCalibration(knots_in=(0.0, 1.0), knots_out=(0.1, 0.9))
    saved = save_artifact(
        tmp_path, replace(model, pass_calibration=calibration), fingerprint="d" * 16, details={}
    )
    code = (
        "import sys\n"
        "import inference_service.server\n"
        "from inference_service.fast_model import probe_rows\n"
        "from inference_service.model import load_served_model\n"
        f"served = load_served_model({str(saved)!r}, expected_pass_mark=50.0)\n"
        "served.warm_up(); served.predict(probe_rows())\n"
        "assert served.score_interval is not None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mapie', 'trainer')))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert found.stdout.strip() == "[]", found.stdout


def test_the_training_run_prints_and_keeps_the_interval_at_the_configured_level(
    tmp_path: Path,
) -> None:
    config = parse_args(
        ["--synthetic", "--no-database", "--rows", "3000", "--models-dir", str(tmp_path)],
        {"STUDENTPERF_INTERVAL_COVERAGE": "0.9"},
    )
    assert config.interval_coverage == 0.9
    out = io.StringIO()
    result = run(replace(config, score_options=(ridge(1.0),), pass_options=(logistic(1.0),)), out)
    printed = re.search(
        r"score interval: predicted score \+/- ([0-9.]+) points \(split-conformal on 300 "
        r"validation rows, stated coverage 90%\); test coverage ([0-9.]+)% of 600 rows",
        out.getvalue(),
    )
    assert printed, out.getvalue()
    print(printed[0])
    # 300 validation and 600 test rows: one standard deviation of the reached level is about
    # 2 points at 90 %; 6 is three.
    assert abs(float(printed[2]) - 90.0) <= 6.0
    assert re.search(r"test calibration error [0-9.]+ before, [0-9.]+ after", out.getvalue())
    metadata = json.loads((result.path / "metadata.json").read_text())
    assert metadata["score_interval"]["coverage"] == 0.9
    assert metadata["score_interval"]["half_width"] == pytest.approx(float(printed[1]), abs=0.005)
    assert metadata["score_interval"]["test_coverage"] == pytest.approx(
        float(printed[2]) / 100, abs=0.0005
    )
    assert set(metadata["pass_calibration"]) >= {"test_ece_before", "test_ece_after", "applied"}
    assert load_artifact(result.path).model.score_interval == result.training.interval.interval


@pytest.mark.parametrize("given", ["0.3", "1", "lots"])
def test_a_bad_interval_coverage_is_refused_naming_the_variable(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--no-database"], {"STUDENTPERF_INTERVAL_COVERAGE": given})
    assert "interval-coverage" in capsys.readouterr().err
