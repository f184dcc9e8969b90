"""Split, choose a candidate per target on validation, refit, evaluate on test: no I/O.

The split is 70 % train / 10 % validation / 20 % test, seeded and stratified on pass/fail, by
student: the database gives one row per (student, term) outcome, each with the student's same
facts, and a student's rows on both sides would make the held-out figures, and the interval's
width, those of students the model was fitted on. Each
candidate is fitted on train and scored on validation (score: RMSE; pass: log loss, which also
rewards calibration); the first with the lowest loss wins, so a more complex model has to be
strictly better. The winners are refitted on train + validation, and only then is the test
split used, once, for the figures. The score's split-conformal interval (trainer.conformal) and
the pass probability's calibration map (trainer.calibration) are fitted on validation from the
chosen candidates' train-only fits, before the refit. OpenMP is held to one thread while
fitting: on small data boosting is faster so, and the run does not depend on the machine's
core count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from studentperf import explain
from studentperf.features import FEATURE_COLUMNS, FEATURE_PATHS, SCORE_RANGE, TARGET_SCORE
from studentperf.model_artifact import StudentModel
from trainer.calibration import CalibrationReport, fit_calibration, judge
from trainer.conformal import DEFAULT_COVERAGE, IntervalReport, coverage_on, fit_interval
from trainer.data import TrainingDataError
from trainer.evaluate import Evaluation, evaluate
from trainer.pipeline import Candidate, pass_candidates, pass_labels, score_candidates

TEST_SHARE = 0.2
VALIDATION_SHARE = 0.1
MIN_ROWS = 50
MIN_PER_CLASS = 5
IMPORTANCE_REPEATS = 5
STUDENT = "student_id"  # the column naming a row's student, where the source gives one

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class Trial:
    name: str
    validation_loss: float
    seconds: float


@dataclass(frozen=True)
class Selection:
    chosen: Candidate
    loss_name: str
    trials: tuple[Trial, ...]
    # The chosen candidate fitted on train only: what the interval and calibration are fitted
    # from, on validation rows it never saw.
    fitted_on_train: Any = None


@dataclass(frozen=True)
class TrainingResult:
    model: StudentModel
    evaluation: Evaluation
    score: Selection
    passing: Selection
    # Rise in the test RMSE of the score, in points, when one input's values are shuffled.
    importances: dict[str, float]
    split: Split
    interval: IntervalReport
    calibration: CalibrationReport

    @property
    def fit_rows(self) -> int:
        return len(self.split.train) + len(self.split.validation)


def split(frame: pd.DataFrame, *, pass_mark: float, seed: int) -> Split:
    """70/10/20 of the students, seeded, stratified on pass/fail (a student's mean score, when
    the student has several rows); TrainingDataError when too small for that."""
    passed = pass_labels(frame[TARGET_SCORE], pass_mark)
    per_class = np.bincount(passed, minlength=2)
    if len(frame) < MIN_ROWS or per_class.min() < MIN_PER_CLASS:
        raise TrainingDataError(
            f"{len(frame)} rows with {per_class[1]} passes and {per_class[0]} fails at pass mark "
            f"{pass_mark:g}: need at least {MIN_ROWS} rows and {MIN_PER_CLASS} of each"
        )
    if STUDENT not in frame.columns or not frame[STUDENT].duplicated().any():
        rest, test = train_test_split(
            frame, test_size=TEST_SHARE, random_state=seed, stratify=passed
        )
        train, validation = train_test_split(
            rest,
            test_size=VALIDATION_SHARE / (1 - TEST_SHARE),
            random_state=seed,
            stratify=pass_labels(rest[TARGET_SCORE], pass_mark),
        )
        return Split(train, validation, test)
    students = frame.groupby(STUDENT, sort=True)[TARGET_SCORE].mean()
    if len(students) < MIN_ROWS:
        raise TrainingDataError(
            f"{len(frame)} rows from {len(students)} students: a student's rows stay on one side "
            f"of the split, so at least {MIN_ROWS} students are needed"
        )
    labels = pd.Series(pass_labels(students, pass_mark), index=students.index)
    kinds = np.bincount(labels, minlength=2)
    if kinds.min() < MIN_PER_CLASS:
        raise TrainingDataError(
            f"{len(students)} students, {kinds[1]} passing and {kinds[0]} failing on average at "
            f"pass mark {pass_mark:g}: a student's rows stay on one side of the split, so at "
            f"least {MIN_PER_CLASS} students of each are needed"
        )
    rest_ids, test_ids = train_test_split(
        students.index, test_size=TEST_SHARE, random_state=seed, stratify=labels
    )
    train_ids, validation_ids = train_test_split(
        rest_ids,
        test_size=VALIDATION_SHARE / (1 - TEST_SHARE),
        random_state=seed,
        stratify=labels[rest_ids],
    )
    ids = frame[STUDENT]
    return Split(
        frame[ids.isin(train_ids)], frame[ids.isin(validation_ids)], frame[ids.isin(test_ids)]
    )


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(FEATURE_COLUMNS)]


def score_loss(pipeline: Any, frame: pd.DataFrame, pass_mark: float) -> float:
    """RMSE of the served (clipped) score."""
    predicted = np.clip(pipeline.predict(_features(frame)), *SCORE_RANGE)
    return float(np.sqrt(mean_squared_error(frame[TARGET_SCORE], predicted)))


def pass_loss(pipeline: Any, frame: pd.DataFrame, pass_mark: float) -> float:
    probabilities = pipeline.predict_proba(_features(frame))[:, 1]
    return float(
        log_loss(pass_labels(frame[TARGET_SCORE], pass_mark), probabilities, labels=[0, 1])
    )


def _target(frame: pd.DataFrame, kind: str, pass_mark: float) -> Any:
    scores = frame[TARGET_SCORE].to_numpy(dtype=float)
    return scores if kind == "score" else pass_labels(scores, pass_mark)


def select(
    candidates: Sequence[Candidate],
    data: Split,
    *,
    kind: str,
    pass_mark: float,
    progress: Progress,
) -> Selection:
    """Fits each candidate on train, scores it on validation, keeps the first best."""
    loss, loss_name = (score_loss, "RMSE") if kind == "score" else (pass_loss, "log loss")
    trials: list[Trial] = []
    best: tuple[float, Candidate, Any] | None = None
    for candidate in candidates:
        started = time.perf_counter()
        fitted = candidate.build().fit(_features(data.train), _target(data.train, kind, pass_mark))
        value = loss(fitted, data.validation, pass_mark)
        trials.append(Trial(candidate.name, value, time.perf_counter() - started))
        progress(f"    {candidate.name:<48} {loss_name} {value:8.4f}  ({trials[-1].seconds:.2f} s)")
        if best is None or value < best[0]:
            best = (value, candidate, fitted)
    assert best is not None, "no candidates"
    progress(f"    chosen: {best[1].name}")
    return Selection(best[1], loss_name, tuple(trials), best[2])


def importances(regressor: Any, test: pd.DataFrame, seed: int) -> dict[str, float]:
    """Permutation importance of each input for the score, in points of RMSE, largest first."""
    found = permutation_importance(
        regressor,
        _features(test),
        test[TARGET_SCORE].to_numpy(dtype=float),
        scoring="neg_root_mean_squared_error",
        n_repeats=IMPORTANCE_REPEATS,
        random_state=seed,
    )
    pairs = zip(FEATURE_COLUMNS, found.importances_mean, strict=True)
    ranked = sorted(((FEATURE_PATHS[f], float(v)) for f, v in pairs), key=lambda p: -p[1])
    return dict(ranked)


def fit_and_evaluate(
    frame: pd.DataFrame,
    *,
    pass_mark: float,
    seed: int,
    score_options: Sequence[Candidate] | None = None,
    pass_options: Sequence[Candidate] | None = None,
    progress: Progress | None = None,
    coverage: float = DEFAULT_COVERAGE,
) -> TrainingResult:
    """The whole fit, deterministic for a given frame and seed; `coverage`: the score
    interval's stated level."""
    say = progress or (lambda _: None)
    with threadpool_limits(limits=1, user_api="openmp"):
        data = split(frame, pass_mark=pass_mark, seed=seed)
        say(
            f"split (seed {seed}, stratified on pass/fail): train {len(data.train)}, "
            f"validation {len(data.validation)}, test {len(data.test)}"
        )
        say("candidates for the score, fitted on train, scored on validation:")
        score = select(
            score_options or score_candidates(seed),
            data,
            kind="score",
            pass_mark=pass_mark,
            progress=say,
        )
        say("candidates for the pass probability:")
        passing = select(
            pass_options or pass_candidates(seed),
            data,
            kind="pass",
            pass_mark=pass_mark,
            progress=say,
        )
        validation = _features(data.validation)
        interval = fit_interval(
            score.fitted_on_train,
            validation,
            data.validation[TARGET_SCORE].to_numpy(dtype=float),
            coverage=coverage,
        )
        calibration = fit_calibration(
            passing.fitted_on_train.predict_proba(validation)[:, 1],
            _target(data.validation, "pass", pass_mark),
        )
        fit = pd.concat([data.train, data.validation])
        say(f"refitting both on train + validation ({len(fit)} rows)")
        regressor = score.chosen.build().fit(_features(fit), _target(fit, "score", pass_mark))
        classifier = passing.chosen.build().fit(_features(fit), _target(fit, "pass", pass_mark))
        preprocessor = regressor.named_steps["features"]
        uncalibrated = StudentModel(
            regressor=regressor,
            classifier=classifier,
            pass_mark=pass_mark,
            score_reference=np.asarray(preprocessor.transform(_features(fit))).mean(axis=0),
            feature_groups=explain.feature_groups(
                list(preprocessor.get_feature_names_out()), FEATURE_COLUMNS
            ),
            score_interval=interval,
        )
        say(f"evaluating on the {len(data.test)} test rows")
        test = _features(data.test)
        test_scores = data.test[TARGET_SCORE].to_numpy(dtype=float)
        judged = judge(
            calibration,
            uncalibrated.pass_probabilities(test),
            _target(data.test, "pass", pass_mark),
            validation_rows=len(data.validation),
        )
        model = (
            replace(uncalibrated, pass_calibration=calibration) if judged.applied else uncalibrated
        )
        covered, width = coverage_on(interval, model.predict_scores(test), test_scores)
        report = IntervalReport(interval, len(data.validation), len(test), covered, width)
        evaluation = evaluate(
            model,
            test,
            test_scores,
            fit[TARGET_SCORE].to_numpy(dtype=float),
            seed=seed,
        )
        ranked = importances(regressor, data.test, seed)
    return TrainingResult(model, evaluation, score, passing, ranked, data, report, judged)
