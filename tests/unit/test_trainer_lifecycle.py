"""The training run around the fit: split, determinism, metadata, promotion gate, fallbacks."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studentperf.features import FEATURE_COLUMNS, TARGET_SCORE
from studentperf.model_artifact import load_artifact
from trainer import reference, synthetic
from trainer.__main__ import parse_args
from trainer.data import TrainingDataError
from trainer.evaluate import Metrics
from trainer.fit import TrainingResult, fit_and_evaluate, split
from trainer.pipeline import (
    boosted_classifier,
    boosted_regressor,
    logistic,
    pass_labels,
    ridge,
)
from trainer.promote import AUC_TOLERANCE, RMSE_TOLERANCE, not_worse
from trainer.train import TrainingConfig, run

# Cheap candidates, one of each kind, so a run takes about a second.
CHEAP = TrainingConfig(
    rows=800,
    seed=5,
    database_url=None,
    score_options=(ridge(1.0), boosted_regressor(5, max_iter=30)),
    pass_options=(logistic(1.0), boosted_classifier(5, max_iter=30)),
)


def config(models: Path, **changes: object) -> TrainingConfig:
    return replace(CHEAP, models_dir=models, **changes)  # type: ignore[arg-type]


def test_split_is_70_10_20_and_stratified() -> None:
    frame = synthetic.generate(2000, 1)
    parts = split(frame, pass_mark=50.0, seed=1)
    assert [len(p) for p in (parts.train, parts.validation, parts.test)] == [1400, 200, 400]
    shares = [pass_labels(p[TARGET_SCORE], 50.0).mean() for p in vars(parts).values()]
    assert max(shares) - min(shares) < 0.01
    ids = [set(p["student_id"]) for p in vars(parts).values()]
    assert sum(map(len, ids)) == len(set.union(*ids)) == 2000


def test_too_little_data_is_refused_with_the_reason() -> None:
    with pytest.raises(TrainingDataError, match="need at least 50 rows"):
        split(synthetic.generate(40, 1), pass_mark=50.0, seed=1)
    with pytest.raises(TrainingDataError, match="0 passes"):
        split(synthetic.generate(200, 1), pass_mark=100.0, seed=1)


def test_same_data_and_seed_give_the_same_metrics() -> None:
    frame = synthetic.generate(700, 9)

    def fit(data: pd.DataFrame, seed: int) -> TrainingResult:
        return fit_and_evaluate(
            data,
            pass_mark=50.0,
            seed=seed,
            score_options=[boosted_regressor(9, max_iter=30)],
            pass_options=[boosted_classifier(9, max_iter=30)],
        )

    first, second = fit(frame, 9), fit(frame.copy(), 9)
    assert first.evaluation == second.evaluation  # exact, boosting included
    assert first.importances == second.importances
    assert fit(frame, 10).evaluation.model != first.evaluation.model


def test_a_run_writes_what_a_school_needs_to_trust_the_model(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run(config(tmp_path), out)
    text = out.getvalue()
    for expected in ("[1/6] loading data", "chosen: ridge", "[5/6] promotion", "pass_ece"):
        assert expected in text
    assert "no database used (--no-database): using synthetic data" in text
    meta = json.loads((result.path / "metadata.json").read_text())
    assert meta["version"] == result.version and meta["created_at"].endswith("Z")
    assert set(meta["libraries"]) >= {"scikit-learn", "numpy", "pandas", "python"}
    assert meta["feature_columns"] == list(FEATURE_COLUMNS)
    assert meta["data_source"].startswith("synthetic") and len(meta["data_sha256"]) == 64
    assert (meta["train_rows"], meta["validation_rows"], meta["test_rows"]) == (560, 80, 160)
    assert set(meta["metrics"]) == set(meta["baseline_metrics"]) == set(Metrics.__annotations__)
    assert meta["explanation_method"] == "linear-exact"
    assert meta["feature_importances"][0]["feature"].startswith("academic_record.")
    assert sum(b["rows"] for b in meta["calibration"]) == 160
    assert load_artifact(tmp_path).version == result.version  # promoted: nothing to beat

    again = run(config(tmp_path / "again"), io.StringIO())
    assert json.loads((again.path / "metadata.json").read_text())["metrics"] == meta["metrics"]


def test_a_worse_model_is_not_promoted_unless_forced(tmp_path: Path) -> None:
    good = run(config(tmp_path), io.StringIO())
    # Regularized into predicting nearly the mean for everyone: much worse on any data.
    crippled = {"score_options": (ridge(1e6),), "pass_options": (logistic(1e-6),)}

    out = io.StringIO()
    worse = run(config(tmp_path, seed=6, **crippled), out)
    assert not worse.decision.promoted and "NOT promoted" in out.getvalue()
    assert worse.decision.current_version == good.version
    assert worse.decision.current_metrics is not None
    assert worse.decision.current_metrics.score_rmse < worse.training.evaluation.model.score_rmse
    header = [line for line in out.getvalue().splitlines() if line.startswith("metric")]
    assert header and "current" in header[0]  # the final table shows the served model too
    assert load_artifact(tmp_path).version == good.version
    assert worse.path.is_dir()  # kept for inspection, just not served

    forced = run(config(tmp_path, seed=7, force=True, **crippled), io.StringIO())
    assert forced.decision.promoted and "forced" in forced.decision.reason
    assert load_artifact(tmp_path).version == forced.version


def test_a_model_for_another_pass_mark_is_not_compared(tmp_path: Path) -> None:
    run(config(tmp_path), io.StringIO())
    other = run(config(tmp_path, pass_mark=60.0), io.StringIO())
    assert other.decision.promoted and "not comparable" in other.decision.reason


def _metrics(rmse: float, auc: float) -> Metrics:
    return Metrics(rmse, 0, 0, auc, 0, 0, 0, 0)


def test_not_worse_is_within_the_tolerances_only() -> None:
    current = _metrics(7.0, 0.90)
    assert not_worse(_metrics(7.0 * (1 + RMSE_TOLERANCE), 0.90 - AUC_TOLERANCE), current)[0]
    assert not not_worse(_metrics(7.0 * (1 + RMSE_TOLERANCE) + 1e-6, 0.95), current)[0]
    assert not not_worse(_metrics(6.0, 0.90 - AUC_TOLERANCE - 1e-6), current)[0]
    assert not_worse(_metrics(6.5, 0.93), current)[1].startswith("RMSE 6.500 vs 7.000")


def test_an_unreachable_database_falls_back_to_synthetic_and_says_so(tmp_path: Path) -> None:
    out = io.StringIO()
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    result = run(config(tmp_path, database_url=unreachable), out)
    text = out.getvalue()
    assert "database postgresql://nobody@127.0.0.1:1/none not reachable" in text
    assert "using synthetic data instead" in text
    assert "not recorded: database" in text
    assert result.data.source.startswith("synthetic") and not result.registered


def test_command_line_defaults_come_from_the_environment() -> None:
    env = {
        "STUDENTPERF_DATABASE_URL": "postgresql://u@db:5432/x",
        "STUDENTPERF_MIN_TRAINING_ROWS": "300",
    }
    parsed = parse_args([], env)
    assert (parsed.database_url, parsed.min_database_rows) == ("postgresql://u@db:5432/x", 300)
    assert parse_args(["--no-database"], env).database_url is None
    with pytest.raises(SystemExit):
        parse_args(["--csv", "x.csv", "--synthetic"], env)


def test_an_empty_column_stays_in_the_schema() -> None:
    frame = synthetic.generate(300, 2)
    frame["previous_gpa"] = np.nan
    model = fit_and_evaluate(frame, pass_mark=50.0, seed=2).model
    assert len(model.feature_groups[FEATURE_COLUMNS.index("previous_gpa")]) == 1
    row = frame[list(FEATURE_COLUMNS)].head(1).assign(previous_gpa=3.9)
    assert model.explain_scores(row).contributions[0][FEATURE_COLUMNS.index("previous_gpa")] == 0
    assert isinstance(model.predict_scores(pd.concat([row, row])).tolist(), list)


def test_a_version_keeps_a_sample_of_its_training_inputs_for_monitoring(tmp_path: Path) -> None:
    result = run(config(tmp_path), io.StringIO())
    kept = reference.read(result.path)
    assert kept is not None and list(kept.columns) == list(FEATURE_COLUMNS)
    fitted_on = pd.concat([result.training.split.train, result.training.split.validation])
    assert len(kept) == len(fitted_on) == 640  # fewer than REFERENCE_ROWS: all of them
    # The same values as the fitted rows, missing ones included (NaN / None).
    expected = reference.sample(fitted_on, CHEAP.seed)
    pd.testing.assert_frame_equal(kept, expected, check_dtype=False)
    assert kept["gender"].isna().any() and kept["previous_gpa"].isna().any()
    meta = json.loads((result.path / "metadata.json").read_text())
    assert meta["reference_inputs"] == {
        "file": reference.REFERENCE_FILE,
        "rows": 640,
        "sampled_from": "train + validation rows",
        "of_rows": 640,
    }


def test_the_reference_sample_is_bounded_and_seeded() -> None:
    frame = synthetic.generate(3000, 2)
    first = reference.sample(frame, 1, rows=500)
    assert len(first) == 500 and list(first.columns) == list(FEATURE_COLUMNS)
    pd.testing.assert_frame_equal(first, reference.sample(frame, 1, rows=500))
    assert not first.equals(reference.sample(frame, 2, rows=500))
    back = reference.from_csv_bytes(reference.to_csv_bytes(first), "test")
    pd.testing.assert_frame_equal(back, first, check_dtype=False)


def test_a_bad_reference_file_is_named(tmp_path: Path) -> None:
    assert reference.read(tmp_path) is None  # an older version: no file at all
    (tmp_path / reference.REFERENCE_FILE).write_text("age,gender\n16,female\n")
    with pytest.raises(reference.ReferenceError, match="lacks the column"):
        reference.read(tmp_path)


def test_retraining_never_falls_back_to_synthetic_data(tmp_path: Path) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(TrainingDataError, match=r"not reachable.*recorded data only"):
        run(config(tmp_path, database_url=unreachable, database_only=True), io.StringIO())
    with pytest.raises(TrainingDataError, match="needs a database"):
        run(config(tmp_path, database_only=True), io.StringIO())
    assert not list(tmp_path.iterdir())  # nothing trained, nothing saved
    assert parse_args(["--database-only"], {}).database_only
    with pytest.raises(SystemExit):
        parse_args(["--database-only", "--no-database"], {})
