"""The two scikit-learn pipelines, preprocessing included, so serving imputes exactly as training.

Both take a DataFrame of FEATURE_COLUMNS (extra columns are dropped). Numbers: median imputation,
then standard scaling. Categories: cast to pandas' string dtype first, which turns both None and
NaN into NaN (SimpleImputer does not treat None in an object column as missing, and OneHotEncoder
would then silently encode it as "unknown"), then most-frequent imputation and one-hot encoding
over the fixed CATEGORIES; an unknown name encodes as all zeros.

Every step is a stock scikit-learn or pandas callable, so unpickling the artifact needs neither
this package nor any other project code.

The effects in the data are roughly additive, so linear models are the honest choice: Ridge for
the score and logistic regression for pass; both fit 5,000 rows in well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from studentperf.features import CATEGORICAL_FEATURES, CATEGORIES, NUMERIC_FEATURES


def build_preprocessor() -> Any:
    """A fresh ColumnTransformer from FEATURE_COLUMNS to the model's numeric matrix."""
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
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
            ("impute", SimpleImputer(strategy="most_frequent")),
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


def build_regressor() -> Any:
    """An unfitted pipeline predicting the final score (unclipped; clip to SCORE_RANGE)."""
    return Pipeline([("features", build_preprocessor()), ("model", Ridge(alpha=1.0))])


def build_classifier() -> Any:
    """An unfitted pipeline whose `predict_proba(frame)[:, 1]` is the probability of passing."""
    return Pipeline(
        [("features", build_preprocessor()), ("model", LogisticRegression(max_iter=1000))]
    )


def pass_labels(scores: npt.ArrayLike, pass_mark: float) -> npt.NDArray[np.int_]:
    """1 where the score reaches the pass mark, else 0."""
    return (np.asarray(scores, dtype=float) >= pass_mark).astype(int)
