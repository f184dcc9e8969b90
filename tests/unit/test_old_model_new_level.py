"""A model trained before some_high_school existed serves it as an unknown category (issue 16).

Its one-hot encoder has no column for the level and ignores an unknown name (all zeros), so
the answer is the one for any name the model never saw. The compiled serving path must give
the same answer, not refuse the model and fall back to the slower pipelines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from inference_service.fast_model import compile_model, feature_table, probe_rows
from inference_service.model import load_served_model
from studentperf.features import FEATURE_COLUMNS, FeatureValue
from tests.old_model import NEW_LEVEL, old_candidate, old_data, save_old_model
from trainer.pipeline import pass_candidates, pass_labels, score_candidates

SEED = 7
EDUCATION = FEATURE_COLUMNS.index("parental_education")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return old_data(600, SEED)


def fitted(candidate: Any, frame: pd.DataFrame, kind: str) -> Any:
    scores = frame["final_score"].to_numpy(dtype=float)
    target = scores if kind == "score" else pass_labels(scores, 50.0)
    return old_candidate(candidate).build().fit(frame[list(FEATURE_COLUMNS)], target)


def with_education(rows: list[tuple[FeatureValue, ...]], level: str | None) -> list[Any]:
    return [(*row[:EDUCATION], level, *row[EDUCATION + 1 :]) for row in rows]


@pytest.mark.parametrize("index", [0, -1], ids=["linear", "boosting"])
def test_an_old_model_compiles_and_answers_the_new_level_as_an_unknown_name(
    frame: pd.DataFrame, index: int
) -> None:
    regressor = fitted(score_candidates(SEED)[index], frame, "score")
    classifier = fitted(pass_candidates(SEED)[index], frame, "pass")
    compiled = compile_model(regressor, classifier)  # NotCompilable would fail the test

    rows = probe_rows()
    new, unknown = with_education(rows, NEW_LEVEL), with_education(rows, "no_such_level")
    new_scores, new_probabilities = compiled.predict(new)
    np.testing.assert_allclose(new_scores, regressor.predict(feature_table(new)), atol=1e-9)
    np.testing.assert_allclose(
        new_probabilities, classifier.predict_proba(feature_table(new))[:, 1], atol=1e-9
    )
    unknown_scores, unknown_probabilities = compiled.predict(unknown)
    np.testing.assert_array_equal(new_scores, unknown_scores)
    np.testing.assert_array_equal(new_probabilities, unknown_probabilities)
    # And it is a real answer of the model, not a copy of a known level's.
    known = compiled.predict(with_education(rows, "high_school"))[0]
    assert not np.allclose(new_scores, known)


def test_an_old_saved_version_is_served_compiled_with_the_new_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_old_model(tmp_path / "models")
    with caplog.at_level(logging.WARNING, logger="inference_service.model"):
        served = load_served_model(str(tmp_path / "models"), expected_pass_mark=50.0)
    assert served.compiled and not caplog.records
    row: tuple[FeatureValue, ...] = (16.0, 90.0, 8.0, 3.0, 1.0, "female", NEW_LEVEL, None, None)
    scores, probabilities = served.predict([row])
    explained = served.explain([row])
    print(f"old model {served.version}: score {scores[0]:.2f}, P(pass) {probabilities[0]:.3f}")
    assert 0 <= scores[0] <= 100 and 0 < probabilities[0] < 1
    # Explained too: the contributions add up to the (here unclipped) score.
    found = explained[0]
    assert found.base + sum(found.contributions) == pytest.approx(found.raw)
    assert found.raw == pytest.approx(scores[0])
