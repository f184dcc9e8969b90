"""One training run: load data, fit and evaluate, save the version, promote it if not worse,
record it in `model_versions`, with progress on the way and the figures in a final table.
With `publish` (many machines, trainer.publish) the version is also stored in the database and
a promotion moves the database's `current`, which every replica follows."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from studentperf.features import DEFAULT_PASS_MARK, FEATURE_COLUMNS, TARGET_SCORE
from studentperf.model_artifact import CURRENT, read_metadata, save_artifact
from trainer import reference
from trainer.conformal import DEFAULT_COVERAGE, IntervalReport
from trainer.data import TrainingData, load_training_data
from trainer.db_source import DatabaseUnavailable
from trainer.evaluate import Evaluation, Metrics
from trainer.fit import TEST_SHARE, VALIDATION_SHARE, TrainingResult, fit_and_evaluate
from trainer.group_quality import format_group_quality
from trainer.pipeline import Candidate, pass_labels
from trainer.promote import GAP_THRESHOLDS, Decision, promote_if_not_worse
from trainer.publish import PublishFailed, follow_database, point_database, publish_version
from trainer.registry import register_version

STEPS = 6


@dataclass(frozen=True)
class TrainingConfig:
    rows: int | None = None  # synthetic students to draw (None: trainer.data.SYNTHETIC_ROWS)
    seed: int = 42
    csv: Path | None = None
    models_dir: Path = Path("models")
    pass_mark: float = DEFAULT_PASS_MARK
    # None: neither read training rows from a database nor record the version in one.
    database_url: str | None = None
    min_database_rows: int = 200
    synthetic: bool = False
    # Retraining: the database's rows or an error, never the synthetic fallback.
    database_only: bool = False
    # Store each version in the database and move its `current` pointer on promotion, for
    # replicas on other machines (trainer.publish); needs database_url.
    publish: bool = False
    # Do nothing when a version is served already (trainer.__main__, a new installation's
    # first training): the `current` of the model source `publish` says.
    first_only: bool = False
    force: bool = False
    # How much a gap between groups of students may widen (trainer.promote.GAP_THRESHOLDS).
    gap_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(GAP_THRESHOLDS))
    # "attribute=level": plant unfairness for that group in the synthetic data (tests, demos).
    unfair_group: str | None = None
    # Share of final scores each prediction's interval should hold (trainer.conformal).
    interval_coverage: float = DEFAULT_COVERAGE
    # The candidates to choose from (None: trainer.pipeline's); tests pass cheaper ones.
    score_options: tuple[Candidate, ...] | None = None
    pass_options: tuple[Candidate, ...] | None = None


@dataclass(frozen=True)
class RunResult:
    path: Path
    decision: Decision
    training: TrainingResult
    data: TrainingData
    registered: bool

    @property
    def version(self) -> str:
        return self.path.name


def fingerprint(frame: pd.DataFrame, params: dict[str, Any]) -> str:
    """A hex digest of the training rows and parameters (the version's suffix)."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    rows = pd.util.hash_pandas_object(frame[[*FEATURE_COLUMNS, TARGET_SCORE]], index=False)
    digest.update(rows.to_numpy().tobytes())
    return digest.hexdigest()


def format_table(evaluation: Evaluation, current: Metrics | None = None) -> str:
    """Test-split figures of the new model beside the baseline (and the served model)."""
    columns: list[tuple[str, Mapping[str, float]]] = [
        ("new model", evaluation.model.as_dict()),
        ("baseline", evaluation.baseline.as_dict()),
    ]
    if current is not None:
        columns.append(("current", current.as_dict()))
    lines = [f"{'metric':<15}" + "".join(f"{title:>12}" for title, _ in columns)]
    for name in evaluation.model.as_dict():
        lines.append(f"{name:<15}" + "".join(f"{values[name]:>12.4f}" for _, values in columns))
    return "\n".join(lines)


def format_interval(report: IntervalReport) -> str:
    interval = report.interval
    return (
        f"score interval: predicted score +/- {interval.half_width:.2f} points "
        f"(split-conformal on {report.validation_rows} validation rows, stated coverage "
        f"{interval.coverage:.0%}); test coverage {report.test_coverage:.1%} of "
        f"{report.test_rows} rows, mean width {report.test_mean_width:.2f} points"
    )


def format_calibration(evaluation: Evaluation) -> str:
    lines = [f"      {'P(pass) bin':<12}{'rows':>6}{'mean P':>9}{'observed':>10}"]
    for b in evaluation.calibration:
        lines.append(
            f"      {f'{b.low:.1f}-{b.high:.1f}':<12}{b.rows:>6}{b.mean_predicted:>9.3f}"
            f"{b.observed_rate:>10.3f}"
        )
    return "\n".join(lines)


def metadata_details(data: TrainingData, training: TrainingResult, seed: int) -> dict[str, Any]:
    """What metadata.json holds beside the artifact module's own fields. Flat keys: the
    inference service reports them in GetModelInfo."""
    model = training.model
    return {
        "data_source": data.source,
        "data_sha256": data.sha256,
        "rows": len(data.frame),
        "dropped_rows": data.dropped_rows,
        "train_rows": len(training.split.train),
        "validation_rows": len(training.split.validation),
        "test_rows": len(training.split.test),
        "fit_rows": training.fit_rows,
        "split": (
            f"random {1 - TEST_SHARE - VALIDATION_SHARE:.0%}/{VALIDATION_SHARE:.0%}/"
            f"{TEST_SHARE:.0%} train/validation/test, stratified on pass/fail; the chosen "
            "candidates refitted on train + validation"
        ),
        "seed": seed,
        "estimators": {
            "score": training.score.chosen.name,
            "pass": training.passing.chosen.name,
            "score_repr": repr(model.regressor.named_steps["model"]),
            "pass_repr": repr(model.classifier.named_steps["model"]),
        },
        "candidates": {
            selection_name: [
                {"name": t.name, f"validation_{selection.loss_name}": t.validation_loss}
                for t in selection.trials
            ]
            for selection_name, selection in (("score", training.score), ("pass", training.passing))
        },
        "metrics": training.evaluation.model.as_dict(),
        "baseline_metrics": training.evaluation.baseline.as_dict(),
        "calibration": [vars(b) for b in training.evaluation.calibration],
        "group_quality": training.evaluation.groups.as_dict(),
        "score_interval": training.interval.as_dict(),
        "pass_calibration": training.calibration.as_dict(),
        "feature_importances": [
            {"feature": name, "rmse_increase": value}
            for name, value in training.importances.items()
        ],
        "explanation_method": model.explanation_method,
    }


def run(config: TrainingConfig, out: TextIO | None = None) -> RunResult:
    """The whole training run, with progress on `out` (stdout)."""
    stream = out or sys.stdout
    started = time.perf_counter()

    def say(message: str) -> None:
        print(message, file=stream, flush=True)

    def step(number: int, title: str) -> None:
        say(f"[{number}/{STEPS}] {title}")

    step(1, "loading data")
    data = load_training_data(
        csv=config.csv,
        rows=config.rows,
        seed=config.seed,
        database_url=config.database_url,
        min_database_rows=config.min_database_rows,
        synthetic_only=config.synthetic,
        database_only=config.database_only,
        unfair_group=config.unfair_group,
    )
    for note in data.notes:
        say(f"    {note}")
    failed = 1 - pass_labels(data.frame[TARGET_SCORE], config.pass_mark).mean()
    dropped = f", {data.dropped_rows} left out" if data.dropped_rows else ""
    say(f"    source: {data.source}")
    say(
        f"    rows: {len(data.frame)}{dropped}; {failed:.1%} below the pass mark "
        f"{config.pass_mark:g}; data sha256 {data.sha256[:16]}"
    )

    step(2, "fitting")
    training = fit_and_evaluate(
        data.frame,
        pass_mark=config.pass_mark,
        seed=config.seed,
        score_options=config.score_options,
        pass_options=config.pass_options,
        progress=lambda line: say(f"    {line}"),
        coverage=config.interval_coverage,
    )
    say(f"    {format_interval(training.interval)}")
    judged = training.calibration
    say(
        f"    calibration of P(pass) (isotonic, fitted on {judged.validation_rows} validation "
        f"rows): test calibration error {judged.ece_before:.4f} before, "
        f"{judged.ece_after:.4f} after: "
        + ("applied" if judged.applied else "not applied (it did not lower it)")
    )
    say("    calibration of P(pass) on the test split, as served:")
    say(format_calibration(training.evaluation))

    step(3, "global feature importances (rise in the test RMSE, in points, when shuffled)")
    for name, value in training.importances.items():
        say(f"    {name:<40}{value:8.3f}")

    step(4, "saving")
    params = {
        "seed": config.seed,
        "pass_mark": config.pass_mark,
        "score": training.score.chosen.name,
        "pass": training.passing.chosen.name,
    }
    fitted_on = pd.concat([training.split.train, training.split.validation])
    sample = reference.sample(fitted_on, config.seed)
    path = save_artifact(
        config.models_dir,
        training.model,
        fingerprint=fingerprint(data.frame, params),
        details=metadata_details(data, training, config.seed)
        | {
            "training_seconds": round(time.perf_counter() - started, 3),
            "reference_inputs": {
                "file": reference.REFERENCE_FILE,
                "rows": len(sample),
                "sampled_from": "train + validation rows",
                "of_rows": len(fitted_on),
            },
        },
        make_current=False,
        extra_files={reference.REFERENCE_FILE: reference.to_csv_bytes(sample)},
    )
    say(f"    version {path.name} in {path} ({len(sample)} reference input rows for monitoring)")
    published_current = None
    if config.publish and config.database_url is not None:
        size = publish_version(config.database_url, path)
        say(f"    stored in the database ({size} bytes, each file with its SHA-256)")
        published_current, refusal = follow_database(config.database_url, config.models_dir)
        if refusal:
            say(f"    the database's current cannot be used ({refusal}): gating without it")

    step(5, "promotion")
    decision = promote_if_not_worse(
        config.models_dir,
        path.name,
        training.evaluation.model,
        training.split.test,
        pass_mark=config.pass_mark,
        groups=training.evaluation.groups,
        gap_thresholds=config.gap_thresholds,
        force=config.force,
    )
    say(f"    {decision.reason}")
    served = (config.models_dir / CURRENT).readlink()
    say(f"    {config.models_dir / CURRENT} -> {served}")
    if config.publish and config.database_url is not None and decision.promoted:
        move = point_database(config.database_url, path.name, published_current, decision.reason)
        if move is not None:
            say(
                f"    the database's current -> {path.name}: every replica follows it "
                f"(recorded as move {move.id} in model_pointer_moves)"
            )
        else:
            raise PublishFailed(
                f"the database's current moved away from {published_current} while this run "
                f"compared against it; {path.name} is stored but not served: train again"
            )

    step(6, "recording the version in model_versions")
    registered = _register(config, path, decision, say)

    say(
        f"test figures ({len(training.split.test)} rows never used for fitting or choosing; "
        f"score: {training.score.chosen.name}, pass: {training.passing.chosen.name}):"
    )
    say(format_table(training.evaluation, decision.current_metrics))
    say(
        "quality per group of students on the same rows (bias: mean predicted - actual score;\n"
        "FNR: at-risk students called safe; FPR: passing students flagged; flagged: share "
        "flagged at risk;\ngaps: highest - lowest judged group, with a bootstrap interval):"
    )
    say(format_group_quality(training.evaluation.groups))
    say(f"done in {time.perf_counter() - started:.1f} s")
    return RunResult(path, decision, training, data, registered)


def _register(
    config: TrainingConfig, path: Path, decision: Decision, say: Callable[[str], None]
) -> bool:
    if config.database_url is None:
        say("    skipped (--no-database)")
        return False
    metadata = read_metadata(path)
    try:
        asyncio.run(
            register_version(
                config.database_url,
                metadata,
                decision=decision.reason,
                promoted=decision.promoted,
            )
        )
    except DatabaseUnavailable as err:
        say(f"    not recorded: {err}")
        return False
    say("    recorded")
    return True
