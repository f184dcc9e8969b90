"""The candidate scikit-learn pipelines, preprocessing included, so serving imputes as training.

Every pipeline takes a DataFrame of FEATURE_COLUMNS (extra columns are dropped) and has two
steps: "features", then "model". Numbers: median imputation, then standard scaling. Categories:
cast to pandas' string dtype first, which turns both None and NaN into NaN (SimpleImputer does
not treat None in an object column as missing, and OneHotEncoder would then silently encode it
as "unknown"), then most-frequent imputation and one-hot encoding over the fixed CATEGORIES; an
unknown name encodes as all zeros. A column with no value at all in the training data (a CSV
that lacks it) is kept, as a constant, so every model has the same encoded columns.

Every step is a stock scikit-learn or pandas callable, so unpickling the artifact needs neither
this package nor any other project code.

Candidates, chosen on the validation split: regularized linear models (Ridge for the score,
L2 logistic regression for passing) over a small grid of strengths, and histogram gradient
boosting with shallow trees, which can find interactions and bends the linear ones cannot.
Boosting is fitted without early stopping (its internal validation split would be a second,
hidden one) and with a fixed random_state, so a fit is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from studentperf.features import CATEGORICAL_FEATURES, CATEGORIES, NUMERIC_FEATURES

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0)
LOGISTIC_CS = (0.01, 0.1, 1.0, 10.0)
BOOSTING = {"max_depth": 3, "learning_rate": 0.05, "max_iter": 300, "l2_regularization": 1.0}


@dataclass(frozen=True)
class Candidate:
    """A named, unfitted pipeline; `build` makes a fresh one each time."""

    name: str
    build: Callable[[], Any]
    linear: bool


def build_preprocessor() -> Any:
    """A fresh ColumnTransformer from FEATURE_COLUMNS to the model's numeric matrix."""
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            (
                "as_string",
                FunctionTransformer(
                    pd.DataFrame.astype, kw_args={"dtype": "str"}, feature_names_out="one-to-one"
                ),
            ),
            ("impute", SimpleImputer(strategy="most_frequent", keep_empty_features=True)),
            (
                "one_hot",
                OneHotEncoder(
                    categories=[list(CATEGORIES[c]) for c in CATEGORICAL_FEATURES],
                    handle_unknown="ignore",
                    sparse_output=False,
                ),
            ),
        ]
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, list(NUMERIC_FEATURES)),
            ("categorical", categorical, list(CATEGORICAL_FEATURES)),
        ]
    )


def _pipeline(model: Any) -> Any:
    return Pipeline([("features", build_preprocessor()), ("model", model)])


def ridge(alpha: float) -> Candidate:
    return Candidate(f"ridge(alpha={alpha:g})", lambda: _pipeline(Ridge(alpha=alpha)), True)


def logistic(c: float) -> Candidate:
    return Candidate(
        f"logistic(C={c:g})", lambda: _pipeline(LogisticRegression(C=c, max_iter=1000)), True
    )


def boosted_regressor(seed: int, **params: Any) -> Candidate:
    settings = BOOSTING | params

    def build() -> Any:
        model = HistGradientBoostingRegressor(**settings, early_stopping=False, random_state=seed)
        return _pipeline(model)

    return Candidate(_boosting_name(settings), build, False)


def boosted_classifier(seed: int, **params: Any) -> Candidate:
    settings = BOOSTING | params

    def build() -> Any:
        model = HistGradientBoostingClassifier(**settings, early_stopping=False, random_state=seed)
        return _pipeline(model)

    return Candidate(_boosting_name(settings), build, False)


def _boosting_name(settings: dict[str, Any]) -> str:
    return (
        f"gradient_boosting(depth={settings['max_depth']}, lr={settings['learning_rate']:g}, "
        f"trees={settings['max_iter']})"
    )


def score_candidates(seed: int) -> list[Candidate]:
    """For the final score; the first of equals wins, so simpler models come first."""
    return [*(ridge(a) for a in RIDGE_ALPHAS), boosted_regressor(seed)]


def pass_candidates(seed: int) -> list[Candidate]:
    """For the probability of passing."""
    return [*(logistic(c) for c in LOGISTIC_CS), boosted_classifier(seed)]


def pass_labels(scores: npt.ArrayLike, pass_mark: float) -> npt.NDArray[np.int_]:
    """1 where the score reaches the pass mark, else 0."""
    return (np.asarray(scores, dtype=float) >= pass_mark).astype(int)
