"""A model as trained before the level some_high_school existed (issue 16), for serving tests.

Such a model's one-hot encoder knows parental education's six older levels only, and its data
had "not given" where a student's parent had some high school (what the CSV import stored
then). It is built with today's code and one parameter changed, the encoder's categories, which
is all that differs in the pickled pipeline of a version trained before the level was added.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from studentperf.features import CATEGORICAL_FEATURES, CATEGORIES
from studentperf.model_artifact import save_artifact
from trainer import synthetic
from trainer.fit import fit_and_evaluate
from trainer.pipeline import Candidate, logistic, ridge

NEW_LEVEL = "some_high_school"
OLD_LEVELS = tuple(level for level in CATEGORIES["parental_education"] if level != NEW_LEVEL)


def old_categories() -> list[list[str]]:
    return [
        list(OLD_LEVELS) if feature == "parental_education" else list(CATEGORIES[feature])
        for feature in CATEGORICAL_FEATURES
    ]


def old_candidate(candidate: Candidate) -> Candidate:
    """The same candidate, its encoder built with the categories of before the new level."""

    def build() -> Any:
        pipeline = candidate.build()
        pipeline.set_params(features__categorical__one_hot__categories=old_categories())
        return pipeline

    return Candidate(candidate.name, build, candidate.linear)


def old_data(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic students with the new level blanked, as the data of the time had it."""
    frame = synthetic.generate(rows, seed)
    education = frame["parental_education"].astype(object)
    frame["parental_education"] = education.where(education != NEW_LEVEL, None)
    return frame


def save_old_model(models: Path, seed: int = 11) -> Path:
    """An old linear model saved as a version under `models` (made current); its directory."""
    fitted = fit_and_evaluate(
        old_data(1000, seed),
        pass_mark=50.0,
        seed=seed,
        score_options=[old_candidate(ridge(1.0))],
        pass_options=[old_candidate(logistic(1.0))],
    )
    encoder = fitted.model.regressor.named_steps["features"].named_transformers_["categorical"]
    known = encoder.named_steps["one_hot"].categories_[
        CATEGORICAL_FEATURES.index("parental_education")
    ]
    assert NEW_LEVEL not in list(known), "the old model must not know the new level"
    return save_artifact(
        models,
        fitted.model,
        fingerprint=f"01d{seed:05x}",
        details={"note": f"trained without the level {NEW_LEVEL}"},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
