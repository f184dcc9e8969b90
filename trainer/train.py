"""Load data, split, fit both pipelines, evaluate on the held-out part, publish the artifact."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from studentperf.features import DEFAULT_PASS_MARK, FEATURE_COLUMNS, TARGET_SCORE
from studentperf.model_artifact import StudentModel, save_artifact
from trainer.data import TrainingData, TrainingDataError, load_training_data
from trainer.evaluate import Evaluation, evaluate
from trainer.pipeline import build_classifier, build_regressor, pass_labels


@dataclass(frozen=True)
class TrainingConfig:
    rows: int = 5000
    seed: int = 42
    csv: Path | None = None
    models_dir: Path = Path("models")
    pass_mark: float = DEFAULT_PASS_MARK
    test_size: float = 0.2


@dataclass(frozen=True)
class TrainingResult:
    model: StudentModel
    evaluation: Evaluation
    train_rows: int
    test_rows: int


def fit_and_evaluate(
    frame: pd.DataFrame, *, pass_mark: float, seed: int, test_size: float = 0.2
) -> TrainingResult:
    """Seeded split stratified on pass/fail, fit on one part, evaluate on the other."""
    passed = pass_labels(frame[TARGET_SCORE], pass_mark)
    if np.bincount(passed, minlength=2).min() < 2:
        raise TrainingDataError(
            f"with pass mark {pass_mark} the data needs at least two passes and two fails"
        )
    train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=passed)
    train_scores = train[TARGET_SCORE].to_numpy(dtype=float)
    features = train[list(FEATURE_COLUMNS)]
    model = StudentModel(
        regressor=build_regressor().fit(features, train_scores),
        classifier=build_classifier().fit(features, pass_labels(train_scores, pass_mark)),
        pass_mark=pass_mark,
    )
    test_scores = test[TARGET_SCORE].to_numpy(dtype=float)
    evaluation = evaluate(model, test[list(FEATURE_COLUMNS)], test_scores, train_scores)
    return TrainingResult(model, evaluation, train_rows=len(train), test_rows=len(test))


def fingerprint(frame: pd.DataFrame, params: dict[str, Any]) -> str:
    """A hex digest of the training rows and parameters (the version's suffix)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    rows = pd.util.hash_pandas_object(frame[[*FEATURE_COLUMNS, TARGET_SCORE]], index=False)
    digest.update(rows.to_numpy().tobytes())
    return digest.hexdigest()


def format_table(evaluation: Evaluation) -> str:
    model, baseline = evaluation.model.as_dict(), evaluation.baseline.as_dict()
    lines = [f"{'metric':<14}{'model':>9}{'baseline':>10}"]
    lines += [f"{name:<14}{model[name]:>9.3f}{baseline[name]:>10.3f}" for name in model]
    return "\n".join(lines)


def run(config: TrainingConfig, out: TextIO | None = None) -> Path:
    """The whole training run, with progress on `out` (stdout); returns the new version dir."""
    out = out or sys.stdout
    started = time.perf_counter()
    print(f"loading data ({config.csv or 'synthetic'})", file=out)
    data: TrainingData = load_training_data(csv=config.csv, rows=config.rows, seed=config.seed)
    dropped = f" ({data.dropped_rows} without {TARGET_SCORE} left out)" if data.dropped_rows else ""
    failed = 1 - pass_labels(data.frame[TARGET_SCORE], config.pass_mark).mean()
    print(
        f"rows: {len(data.frame)}{dropped}, {failed:.1%} below the pass mark {config.pass_mark:g}",
        file=out,
    )
    print(f"fitting on {1 - config.test_size:.0%} of the rows (seed {config.seed})", file=out)
    result = fit_and_evaluate(
        data.frame, pass_mark=config.pass_mark, seed=config.seed, test_size=config.test_size
    )
    print(f"evaluating on {result.test_rows} held-out rows", file=out)
    print(format_table(result.evaluation), file=out)
    params = {"seed": config.seed, "pass_mark": config.pass_mark, "test_size": config.test_size}
    # Flat keys: the inference service reports these in GetModelInfo.
    details = {
        "data_source": data.source,
        "rows": len(data.frame),
        "dropped_rows": data.dropped_rows,
        "train_rows": result.train_rows,
        "test_rows": result.test_rows,
        "split": f"random {1 - config.test_size:.0%}/{config.test_size:.0%}, "
        "stratified on pass/fail",
        "seed": config.seed,
        "estimators": {
            "regressor": repr(result.model.regressor.named_steps["model"]),
            "classifier": repr(result.model.classifier.named_steps["model"]),
        },
        "metrics": result.evaluation.model.as_dict(),
        "baseline_metrics": result.evaluation.baseline.as_dict(),
        "training_seconds": round(time.perf_counter() - started, 3),
    }
    path = save_artifact(
        config.models_dir,
        result.model,
        fingerprint=fingerprint(data.frame, params),
        details=details,
    )
    print(f"saved model version {path.name} to {path}", file=out)
    print(f"{config.models_dir / 'current'} -> {path.name}", file=out)
    return path
