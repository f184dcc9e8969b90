"""Per-prediction explanations of the score: exact Shapley values against a reference student.

The game: the regressor's estimator sees a student's encoded row `x` (after imputation, scaling
and one-hot encoding); a coalition S of input features takes its encoded columns from `x`, every
other feature takes them from the reference `r`, the mean of the encoded training rows. Each
feature's one-hot columns move together, so contributions come out per input, not per column.
The Shapley value of a feature is its average marginal effect over all orders of adding
features, so, exactly (up to floating point):

    f(r) + sum of the contributions = f(x)

`f(r)` is the base score; `f(x)` is the raw score before clipping to 0-100. For a linear
estimator the Shapley value has a closed form, coef * (x - r) summed over the feature's columns,
and `f(r)` is the mean training prediction. For any other estimator (gradient boosting) every one
of the 2**9 coalitions is evaluated: 512 rows per explained student, one batched `predict`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from math import factorial
from typing import Any, Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

LINEAR: Final = "linear-exact"
SHAPLEY: Final = "shapley-exact"

# Rows of the coalition matrix evaluated per `predict` call: 512 per student, about 300 students
# at 21 encoded columns stay near 26 MB.
_CHUNK_ROWS: Final = 512 * 300


@dataclass(frozen=True)
class Explanations:
    """For n students and k features: base + contributions.sum(axis=1) == raw."""

    base: float
    contributions: FloatArray  # (n, k), in the order of the groups
    raw: FloatArray  # (n,)
    method: str


def feature_groups(
    encoded_names: Sequence[str], features: Sequence[str]
) -> tuple[tuple[int, ...], ...]:
    """The encoded columns of each feature, named by ColumnTransformer as `<part>__<feature>`
    (numbers) or `<part>__<feature>_<level>` (one-hot)."""
    groups: list[tuple[int, ...]] = []
    for feature in features:
        found = tuple(
            index
            for index, name in enumerate(encoded_names)
            if name.split("__", 1)[-1] == feature
            or name.split("__", 1)[-1].startswith(f"{feature}_")
        )
        groups.append(found)
    claimed = sorted(i for group in groups for i in group)
    if claimed != list(range(len(encoded_names))):
        raise ValueError(f"encoded columns {list(encoded_names)} do not map onto {features}")
    return tuple(groups)


def is_linear(estimator: Any) -> bool:
    coef = getattr(estimator, "coef_", None)
    return coef is not None and np.ndim(coef) == 1 and hasattr(estimator, "intercept_")


def explain(
    estimator: Any,
    encoded: FloatArray,
    reference: FloatArray,
    groups: tuple[tuple[int, ...], ...],
) -> Explanations:
    """Contributions of each feature group to `estimator.predict` for each encoded row."""
    if is_linear(estimator):
        return linear(
            np.asarray(estimator.coef_, dtype=np.float64),
            float(estimator.intercept_),
            encoded,
            reference,
            groups,
        )
    return shapley(estimator.predict, encoded, reference, groups)


def linear(
    coef: FloatArray,
    intercept: float,
    encoded: FloatArray,
    reference: FloatArray,
    groups: tuple[tuple[int, ...], ...],
) -> Explanations:
    """The closed form for f(x) = intercept + coef . x."""
    per_column = (encoded - reference) * coef
    contributions = np.column_stack([per_column[:, list(g)].sum(axis=1) for g in groups])
    base = float(intercept + coef @ reference)
    return Explanations(base, contributions, encoded @ coef + intercept, LINEAR)


def shapley(
    predict: Callable[[FloatArray], Any],
    encoded: FloatArray,
    reference: FloatArray,
    groups: tuple[tuple[int, ...], ...],
) -> Explanations:
    """Exact Shapley values by evaluating every coalition of the groups."""
    masks = _column_masks(groups, encoded.shape[1])
    weights = shapley_weights(len(groups))
    n_coalitions = masks.shape[0]
    per_chunk = max(1, _CHUNK_ROWS // n_coalitions)
    values: list[FloatArray] = []
    for start in range(0, encoded.shape[0], per_chunk):
        rows = encoded[start : start + per_chunk]
        mixed = np.where(masks[None, :, :], rows[:, None, :], reference[None, None, :])
        flat = mixed.reshape(-1, encoded.shape[1])
        values.append(np.asarray(predict(flat), dtype=np.float64).reshape(len(rows), -1))
    outcomes = np.vstack(values) if values else np.empty((0, n_coalitions))
    contributions = outcomes @ weights
    base = float(np.asarray(predict(reference[None, :]), dtype=np.float64)[0])
    # The full coalition is the last row of the mask matrix: f(x) itself.
    return Explanations(base, contributions, outcomes[:, -1], SHAPLEY)


@cache
def coalitions(n_groups: int) -> npt.NDArray[np.bool_]:
    """(2**n, n): every subset of the groups; the first is empty, the last is all of them."""
    return np.array(list(itertools.product([False, True], repeat=n_groups)), dtype=bool)


@cache
def shapley_weights(n_groups: int) -> FloatArray:
    """W with (f(S) for every coalition S) @ W = the Shapley values.

    phi_i = sum over S not holding i of |S|!(n-|S|-1)!/n! * (f(S + i) - f(S)): each f(S) enters
    with +w(|S|-1) for every i in S and -w(|S|) for every i not in S.
    """
    subsets = coalitions(n_groups)
    sizes = subsets.sum(axis=1)

    def w(size: npt.NDArray[np.int_]) -> FloatArray:
        size = np.clip(size, 0, n_groups - 1)
        return np.array(
            [factorial(s) * factorial(n_groups - s - 1) / factorial(n_groups) for s in size]
        )

    plus = w(sizes - 1)[:, None] * subsets
    minus = w(sizes)[:, None] * ~subsets
    weights: FloatArray = plus - minus
    return weights


def _column_masks(groups: tuple[tuple[int, ...], ...], n_columns: int) -> npt.NDArray[np.bool_]:
    subsets = coalitions(len(groups))
    owner = np.empty(n_columns, dtype=int)
    for index, group in enumerate(groups):
        owner[list(group)] = index
    masks: npt.NDArray[np.bool_] = subsets[:, owner]
    return masks
