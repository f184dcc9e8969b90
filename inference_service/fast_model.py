"""The trained pipelines' preprocessing compiled into numpy arrays, for the serving hot path.

`Pipeline.predict` on a pandas DataFrame costs milliseconds per call, most of it in the
ColumnTransformer, while the same arithmetic on numpy arrays costs microseconds. At model load
the fitted steps are read once (median per number, scaler mean and scale, the most frequent
category and the one-hot columns of each category) and rows are encoded from them directly.
Linear estimators become one dot product; any other estimator gets the encoded matrix.

A few rows through linear models (single calls, small micro-batches) skip numpy too: each
model is folded, at load, into per-feature constants applied to a row in plain Python floats
(`RowLinear`), since numpy's fixed cost per array call is most of the cost of a handful of rows.
Both forms are checked against the pipelines on the probe rows.

Only the exact pipeline shape of `trainer.pipeline` is compiled. Anything else, or a compiled
model whose answers differ from the pipeline's on a set of probe rows, is refused with a reason
(`NotCompilable`), and the caller keeps using the pipeline itself.

Why this module is over 300 lines: compiling a pipeline and checking the compiled model against
it on the probe rows belong together; a change to how one step is compiled must be read beside
the check that catches it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from studentperf.features import (
    CATEGORICAL_FEATURES,
    CATEGORIES,
    FEATURE_COLUMNS,
    NUMERIC_FEATURES,
    NUMERIC_RANGES,
    FeatureValue,
)

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]

_NUMERIC_INDEX = [FEATURE_COLUMNS.index(name) for name in NUMERIC_FEATURES]
_CATEGORICAL_INDEX = [FEATURE_COLUMNS.index(name) for name in CATEGORICAL_FEATURES]
# Probe rows must agree to this tolerance, relative and absolute, with the pipeline.
_TOLERANCE = 1e-9
# Up to this many rows a linear model runs in plain floats (CompiledModel.predict_few).
FEW_ROWS = 16


class NotCompilable(Exception):
    """The pipeline is not of the known shape, or its compiled form does not agree with it."""


@dataclass(frozen=True)
class Encoder:
    """The ColumnTransformer as arrays: numbers imputed and scaled, categories one-hot."""

    medians: Vector
    means: Vector
    scales: Vector
    # Per categorical feature: its category name -> encoded column, and the column of its
    # imputed value (None: the imputed value is no known category, so all zeros).
    one_hot: tuple[dict[str, int], ...]
    imputed_column: tuple[int | None, ...]
    width: int

    def same_as(self, other: Encoder) -> bool:
        return self is other or (
            np.array_equal(self.medians, other.medians)
            and np.array_equal(self.means, other.means)
            and np.array_equal(self.scales, other.scales)
            and self.one_hot == other.one_hot
            and self.imputed_column == other.imputed_column
        )

    def encode(self, rows: Sequence[tuple[FeatureValue, ...]]) -> Matrix:
        encoded = np.zeros((len(rows), self.width), dtype=np.float64)
        numbers = np.array(
            [[row[i] for i in _NUMERIC_INDEX] for row in rows], dtype=np.float64
        ).reshape(len(rows), len(_NUMERIC_INDEX))
        numbers = np.where(np.isnan(numbers), self.medians, numbers)
        encoded[:, : len(_NUMERIC_INDEX)] = (numbers - self.means) / self.scales
        for feature, index in enumerate(_CATEGORICAL_INDEX):
            columns, missing = self.one_hot[feature], self.imputed_column[feature]
            for number, row in enumerate(rows):
                value = row[index]
                column = missing if value is None else columns.get(str(value))
                if column is not None:
                    encoded[number, column] = 1.0
        return encoded


@dataclass(frozen=True)
class RowLinear:
    """intercept + coef . encode(row) for one row, in plain floats: each numeric feature as
    (its row index, the value imputed for NaN, mean, scale, coefficient), each categorical one
    as (its row index, category name -> coefficient, the coefficient when missing)."""

    intercept: float
    numeric: tuple[tuple[int, float, float, float, float], ...]
    categorical: tuple[tuple[int, dict[str, float], float], ...]

    def __call__(self, row: tuple[FeatureValue, ...]) -> float:
        total = self.intercept
        for index, fill, mean, scale, coef in self.numeric:
            value = row[index]
            number = fill if value is None or value != value else float(value)  # NaN: missing
            total += coef * ((number - mean) / scale)
        for index, weights, missing in self.categorical:
            value = row[index]
            total += missing if value is None else weights.get(str(value), 0.0)
        return total

    @classmethod
    def fold(cls, encoder: Encoder, coef: Vector, intercept: float) -> RowLinear:
        numeric = tuple(
            (
                index,
                float(encoder.medians[k]),
                float(encoder.means[k]),
                float(encoder.scales[k]),
                float(coef[k]),
            )
            for k, index in enumerate(_NUMERIC_INDEX)
        )
        categorical = tuple(
            (
                index,
                {name: float(coef[column]) for name, column in encoder.one_hot[k].items()},
                0.0
                if encoder.imputed_column[k] is None
                else float(coef[encoder.imputed_column[k]]),
            )
            for k, index in enumerate(_CATEGORICAL_INDEX)
        )
        return cls(intercept, numeric, categorical)


@dataclass(frozen=True)
class CompiledModel:
    """Both pipelines compiled: scores (unclipped) and pass probabilities from feature rows."""

    score_encoder: Encoder
    pass_encoder: Encoder
    raw_scores: Callable[[Matrix], Vector]
    pass_probabilities: Callable[[Matrix], Vector]
    # True when no estimator is called (pure numpy): cheap enough to run on the event loop.
    linear: bool
    # Both models for one row in plain floats (linear models only): the raw score and the
    # pass probability's log-odds.
    row_models: tuple[RowLinear, RowLinear] | None = None

    def predict(self, rows: Sequence[tuple[FeatureValue, ...]]) -> tuple[Vector, Vector]:
        encoded = self.score_encoder.encode(rows)
        scores = self.raw_scores(encoded)
        if self.pass_encoder is not self.score_encoder:
            encoded = self.pass_encoder.encode(rows)
        return scores, self.pass_probabilities(encoded)

    def predict_few(
        self, rows: Sequence[tuple[FeatureValue, ...]]
    ) -> tuple[list[float], list[float]] | None:
        """`predict` in plain floats, for up to FEW_ROWS rows through linear models; None
        otherwise (then `predict` is the cheaper one)."""
        if self.row_models is None or len(rows) > FEW_ROWS:
            return None
        score, log_odds = self.row_models
        return [score(row) for row in rows], [_logistic_float(log_odds(row)) for row in rows]


def compile_model(regressor: Any, classifier: Any) -> CompiledModel:
    """Compiles both fitted pipelines and checks them against the originals on probe rows."""
    score_encoder, score_model = _split(regressor)
    pass_encoder, pass_model = _split(classifier)
    # Both pipelines are fitted on the same rows, so one encoding usually serves both.
    if pass_encoder.same_as(score_encoder):
        pass_encoder = score_encoder
    # Exactly these two types: the ones _score_function and _probability_function compile.
    dot_products = type(score_model) is Ridge and type(pass_model) is LogisticRegression
    compiled = CompiledModel(
        score_encoder=score_encoder,
        pass_encoder=pass_encoder,
        raw_scores=_score_function(score_model),
        pass_probabilities=_probability_function(pass_model),
        linear=isinstance(score_model, Ridge) and isinstance(pass_model, LogisticRegression),
        row_models=_row_models(score_encoder, score_model, pass_encoder, pass_model)
        if dot_products
        else None,
    )
    _check_agrees(compiled, regressor, classifier)
    return compiled


def _split(pipeline: Any) -> tuple[Encoder, Any]:
    if not isinstance(pipeline, Pipeline) or [name for name, _ in pipeline.steps] != [
        "features",
        "model",
    ]:
        raise NotCompilable("not a two-step (features, model) Pipeline")
    return _encoder(pipeline.named_steps["features"]), pipeline.named_steps["model"]


def _encoder(features: Any) -> Encoder:
    if not isinstance(features, ColumnTransformer):
        raise NotCompilable("the features step is not a ColumnTransformer")
    fitted = [(name, step, list(cols)) for name, step, cols in features.transformers_]
    if fitted[-1][0] == "remainder" and (fitted[-1][1] == "drop" or not fitted[-1][2]):
        fitted = fitted[:-1]
    if [(name, cols) for name, _, cols in fitted] != [
        ("numeric", list(NUMERIC_FEATURES)),
        ("categorical", list(CATEGORICAL_FEATURES)),
    ]:
        raise NotCompilable("the ColumnTransformer's columns are not numeric then categorical")
    medians, means, scales = _numeric(fitted[0][1])
    one_hot, imputed = _categorical(fitted[1][1], first_column=len(NUMERIC_FEATURES))
    width = len(NUMERIC_FEATURES) + sum(len(columns) for columns in one_hot)
    return Encoder(medians, means, scales, one_hot, imputed, width)


def _steps(pipeline: Any, expected: list[tuple[str, type]]) -> list[Any]:
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != len(expected):
        raise NotCompilable(f"expected steps {[name for name, _ in expected]}")
    found = []
    for (name, step), (want_name, want_type) in zip(pipeline.steps, expected, strict=True):
        if name != want_name or type(step) is not want_type:
            raise NotCompilable(f"step {name!r} is a {type(step).__name__}, expected {want_name}")
        found.append(step)
    return found


def _numeric(pipeline: Any) -> tuple[Vector, Vector, Vector]:
    imputer, scaler = _steps(pipeline, [("impute", SimpleImputer), ("scale", StandardScaler)])
    if imputer.strategy != "median" or not _is_nan(imputer.missing_values):
        raise NotCompilable("the numeric imputer is not a median imputer of NaN")
    if imputer.add_indicator:
        raise NotCompilable("the numeric imputer adds indicator columns")
    count = len(NUMERIC_FEATURES)
    medians = np.asarray(imputer.statistics_, dtype=np.float64)
    means = np.asarray(scaler.mean_ if scaler.with_mean else np.zeros(count), dtype=np.float64)
    scales = np.asarray(scaler.scale_ if scaler.with_std else np.ones(count), dtype=np.float64)
    if not (medians.shape == means.shape == scales.shape == (count,)):
        raise NotCompilable("numeric statistics do not match the numeric features")
    return medians, means, scales


def _categorical(
    pipeline: Any, *, first_column: int
) -> tuple[tuple[dict[str, int], ...], tuple[int | None, ...]]:
    _, imputer, encoder = _steps(
        pipeline,
        [("as_string", FunctionTransformer), ("impute", SimpleImputer), ("one_hot", OneHotEncoder)],
    )
    if imputer.strategy != "most_frequent" or imputer.add_indicator:
        raise NotCompilable("the categorical imputer is not a plain most-frequent imputer")
    if encoder.drop is not None or encoder.handle_unknown != "ignore":
        raise NotCompilable("the one-hot encoder drops columns or refuses unknown names")
    if getattr(encoder, "_infrequent_enabled", False):
        raise NotCompilable("the one-hot encoder groups infrequent categories")
    one_hot: list[dict[str, int]] = []
    imputed: list[int | None] = []
    column = first_column
    for categories, fill in zip(encoder.categories_, imputer.statistics_, strict=True):
        names = [str(name) for name in categories]
        columns = {name: column + offset for offset, name in enumerate(names)}
        one_hot.append(columns)
        imputed.append(None if _is_nan(fill) else columns.get(str(fill)))
        column += len(names)
        # A model trained before a level was added lacks its column; the encoder ignores the
        # name (all zeros) and so does `columns.get` above, which the probe rows confirm.
    return tuple(one_hot), tuple(imputed)


def _row_models(
    score_encoder: Encoder, score_model: Any, pass_encoder: Encoder, pass_model: Any
) -> tuple[RowLinear, RowLinear] | None:
    if np.ndim(score_model.coef_) != 1 or np.shape(pass_model.coef_)[0] != 1:
        return None
    return (
        RowLinear.fold(
            score_encoder,
            np.asarray(score_model.coef_, dtype=np.float64),
            float(score_model.intercept_),
        ),
        RowLinear.fold(
            pass_encoder,
            np.asarray(pass_model.coef_, dtype=np.float64)[0],
            float(np.asarray(pass_model.intercept_)[0]),
        ),
    )


def _score_function(model: Any) -> Callable[[Matrix], Vector]:
    if type(model) is Ridge and np.ndim(model.coef_) == 1:
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = float(model.intercept_)
        return lambda encoded: encoded @ coef + intercept
    if not hasattr(model, "predict"):
        raise NotCompilable(f"{type(model).__name__} has no predict")
    return lambda encoded: np.asarray(model.predict(encoded), dtype=np.float64)


def _probability_function(model: Any) -> Callable[[Matrix], Vector]:
    classes = list(getattr(model, "classes_", []))
    if len(classes) != 2:
        raise NotCompilable("the classifier is not binary")
    if type(model) is LogisticRegression:
        coef = np.asarray(model.coef_, dtype=np.float64)[0]
        intercept = float(np.asarray(model.intercept_)[0])
        # Binary logistic regression: P(classes_[1]) is the logistic of the decision function.
        return lambda encoded: _logistic(encoded @ coef + intercept)
    if not hasattr(model, "predict_proba"):
        raise NotCompilable(f"{type(model).__name__} has no predict_proba")
    return lambda encoded: np.asarray(model.predict_proba(encoded)[:, 1], dtype=np.float64)


def probe_rows() -> list[tuple[FeatureValue, ...]]:
    """Rows covering every category, every missing value and each numeric range's ends."""
    rows: list[tuple[FeatureValue, ...]] = []
    longest = max(len(names) for names in CATEGORIES.values())
    for step in range(longest + 1):
        categories = [
            names[step] if step < len(names) else None
            for names in (CATEGORIES[c] for c in CATEGORICAL_FEATURES)
        ]
        for end in (0, 1, None):
            numbers: list[float] = [
                math.nan if end is None else NUMERIC_RANGES[name][end] for name in NUMERIC_FEATURES
            ]
            rows.append((*numbers, *categories))
    # Each numeric feature missing alone, at mid-range otherwise.
    middle = [sum(NUMERIC_RANGES[name]) / 2 for name in NUMERIC_FEATURES]
    for missing in range(len(NUMERIC_FEATURES)):
        numbers = [math.nan if i == missing else v for i, v in enumerate(middle)]
        rows.append((*numbers, *(CATEGORIES[c][0] for c in CATEGORICAL_FEATURES)))
    return rows


def feature_table(rows: Sequence[tuple[FeatureValue, ...]]) -> pd.DataFrame:
    """The DataFrame the pipelines take (numbers float64, categories objects)."""
    columns: dict[str, Any] = {}
    for index, name in enumerate(FEATURE_COLUMNS):
        values = [row[index] for row in rows]
        columns[name] = (
            np.array(values, dtype=object)
            if name in CATEGORIES
            else np.array(values, dtype=np.float64)
        )
    return pd.DataFrame(columns, columns=list(FEATURE_COLUMNS))


def _check_agrees(compiled: CompiledModel, regressor: Any, classifier: Any) -> None:
    rows = probe_rows()
    table = feature_table(rows)
    want_scores = np.asarray(regressor.predict(table), dtype=np.float64)
    want_probabilities = np.asarray(classifier.predict_proba(table)[:, 1], dtype=np.float64)
    found = [("compiled", compiled.predict(rows))]
    if compiled.row_models is not None:
        few = [compiled.predict_few(rows[i : i + FEW_ROWS]) for i in range(0, len(rows), FEW_ROWS)]
        found.append(
            (
                "row by row",
                (
                    np.array([s for part in few if part for s in part[0]]),
                    np.array([p for part in few if part for p in part[1]]),
                ),
            )
        )
    for how, (scores, probabilities) in found:
        for what, got, want in (
            ("scores", scores, want_scores),
            ("pass probabilities", probabilities, want_probabilities),
        ):
            if got.shape != want.shape or not np.allclose(
                got, want, rtol=_TOLERANCE, atol=_TOLERANCE
            ):
                worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else math.inf
                raise NotCompilable(f"{how} {what} differ from the pipeline's by up to {worst:g}")


def _logistic(z: Vector) -> Vector:
    # 1 / (1 + e^-z) written so that no large |z| overflows.
    return np.asarray(np.exp(-np.logaddexp(0.0, -z)), dtype=np.float64)


def _logistic_float(z: float) -> float:
    """`_logistic` of one float: exp(-logaddexp(0, -z)), with no overflow for any z."""
    return math.exp(-(max(0.0, -z) + math.log1p(math.exp(-abs(z)))))


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
