"""The compiled (numpy) serving path gives the pipelines' own predictions, for every candidate."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from inference_service.fast_model import (
    FEW_ROWS,
    CompiledModel,
    compile_model,
    feature_table,
    probe_rows,
)
from inference_service.model import ServedModel
from studentperf.features import (
    CATEGORICAL_FEATURES,
    CATEGORIES,
    FEATURE_COLUMNS,
    NUMERIC_FEATURES,
    NUMERIC_RANGES,
    SCORE_RANGE,
    TARGET_SCORE,
    FeatureValue,
)
from studentperf.model_artifact import LoadedModel, StudentModel
from trainer import synthetic
from trainer.pipeline import pass_candidates, pass_labels, score_candidates

SEED = 5
Row = tuple[FeatureValue, ...]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic.generate(600, seed=SEED)


def random_rows(count: int, seed: int, missing: float = 0.3) -> list[Row]:
    """Rows as the encoder makes them, each value missing with probability `missing`."""
    draw = random.Random(seed)
    rows: list[Row] = []
    for _ in range(count):
        numbers: list[FeatureValue] = [
            math.nan if draw.random() < missing else draw.uniform(*NUMERIC_RANGES[name])
            for name in NUMERIC_FEATURES
        ]
        categories: list[FeatureValue] = [
            None if draw.random() < missing else draw.choice(CATEGORIES[name])
            for name in CATEGORICAL_FEATURES
        ]
        rows.append((*numbers, *categories))
    return rows


def fitted(build: Any, frame: pd.DataFrame, kind: str) -> Any:
    scores = frame[TARGET_SCORE].to_numpy(dtype=float)
    target = scores if kind == "score" else pass_labels(scores, 50.0)
    return build().fit(frame[list(FEATURE_COLUMNS)], target)


def assert_same(compiled: CompiledModel, regressor: Any, classifier: Any, rows: list[Row]) -> None:
    """Both compiled forms (numpy, and row by row in floats for linear models) give the
    pipelines' predictions."""
    table = feature_table(rows)
    want_scores = regressor.predict(table)
    want_probabilities = classifier.predict_proba(table)[:, 1]
    found = [compiled.predict(rows)]
    if compiled.row_models is not None:
        few = [compiled.predict_few(rows[i : i + FEW_ROWS]) for i in range(0, len(rows), FEW_ROWS)]
        assert all(part is not None for part in few)
        found.append(
            (
                np.array([s for part in few if part for s in part[0]]),
                np.array([p for part in few if part for p in part[1]]),
            )
        )
    for scores, probabilities in found:
        np.testing.assert_allclose(scores, want_scores, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(probabilities, want_probabilities, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("index", range(len(score_candidates(SEED))))
def test_every_candidate_pair_compiles_to_the_same_predictions(
    frame: pd.DataFrame, index: int
) -> None:
    score_candidate = score_candidates(SEED)[index]
    pass_candidate = pass_candidates(SEED)[index]
    regressor = fitted(score_candidate.build, frame, "score")
    classifier = fitted(pass_candidate.build, frame, "pass")
    compiled = compile_model(regressor, classifier)
    assert compiled.linear == (score_candidate.linear and pass_candidate.linear)
    # Linear pairs also predict a few rows in plain floats; the others never do.
    assert (compiled.predict_few(random_rows(1, seed=0)) is not None) == compiled.linear
    assert_same(compiled, regressor, classifier, random_rows(500, seed=index))
    assert_same(compiled, regressor, classifier, random_rows(50, seed=index, missing=1.0))
    assert_same(compiled, regressor, classifier, probe_rows())
    # One row at a time, as single Predict calls without micro-batching send them.
    for row in random_rows(5, seed=100 + index):
        assert_same(compiled, regressor, classifier, [row])


def test_a_feature_missing_from_all_training_data_still_compiles(frame: pd.DataFrame) -> None:
    """A CSV without a column trains it as a constant; serving must impute it the same way."""
    holey = frame.copy()
    holey["study_hours_per_week"] = math.nan
    holey["lunch_program"] = None
    regressor = fitted(score_candidates(SEED)[0].build, holey, "score")
    classifier = fitted(pass_candidates(SEED)[-1].build, holey, "pass")
    compiled = compile_model(regressor, classifier)
    assert_same(compiled, regressor, classifier, random_rows(300, seed=9))


def served(regressor: Any, classifier: Any) -> ServedModel:
    model = StudentModel(
        regressor=regressor,
        classifier=classifier,
        pass_mark=50.0,
        score_reference=np.zeros(1),
        feature_groups=(),
    )
    return ServedModel(LoadedModel(model=model, version="v-test", path=None, metadata={}))  # type: ignore[arg-type]


def test_served_model_uses_the_compiled_path_and_clips_scores(frame: pd.DataFrame) -> None:
    regressor = fitted(score_candidates(SEED)[0].build, frame, "score")
    classifier = fitted(pass_candidates(SEED)[0].build, frame, "pass")
    model = served(regressor, classifier)
    assert model.compiled
    assert model.inline_rows >= 256  # a dot product: cheap enough for the event loop
    rows = random_rows(200, seed=3)
    scores, probabilities = model.predict(rows)
    table = feature_table(rows)
    np.testing.assert_allclose(scores, np.clip(regressor.predict(table), *SCORE_RANGE), atol=1e-10)
    np.testing.assert_allclose(probabilities, classifier.predict_proba(table)[:, 1], atol=1e-10)
    # A single call's row, and a small micro-batch, take the plain-float path: same answers,
    # scores clipped the same way, as lists of floats.
    for few in (rows[:1], rows[:FEW_ROWS]):
        assert model._compiled is not None and model._compiled.predict_few(few) is not None
        few_scores, few_probabilities = model.predict(few)
        assert isinstance(few_scores, list) and isinstance(few_probabilities, list)
        assert few_scores == pytest.approx(list(scores[: len(few)]), rel=1e-10, abs=1e-10)
        assert few_probabilities == pytest.approx(
            list(probabilities[: len(few)]), rel=1e-10, abs=1e-10
        )


def test_an_unknown_pipeline_shape_falls_back_to_the_pipeline(
    frame: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    regressor = fitted(score_candidates(SEED)[0].build, frame, "score")
    classifier = fitted(pass_candidates(SEED)[0].build, frame, "pass")
    numeric = regressor.named_steps["features"].named_transformers_["numeric"]
    numeric.steps[-1] = (
        "scale",
        MinMaxScaler().fit(frame[list(NUMERIC_FEATURES)].fillna(0).to_numpy()),
    )
    assert isinstance(regressor, Pipeline)
    with caplog.at_level(logging.WARNING):
        model = served(regressor, classifier)
    assert not model.compiled
    assert model.inline_rows == 0  # milliseconds per call: a worker thread's job
    assert "serving through the scikit-learn pipelines" in caplog.text
    rows = random_rows(20, seed=4)
    scores, _ = model.predict(rows)
    table = feature_table(rows)
    np.testing.assert_allclose(scores, np.clip(regressor.predict(table), *SCORE_RANGE))
