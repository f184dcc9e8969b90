"""Input drift of one feature: recent values against the training values of the model that served.

Population stability index (PSI) over bins fixed by the training data:

- numbers: the deciles of the training values (`NUMERIC_BINS` = 10 quantile bins, each edge a
  training value: numpy's "inverted_cdf" quantiles, no interpolation); repeated
  quantiles (ages in whole years, a 0/1 flag) collapse into one edge, so a feature gets fewer,
  never empty-by-construction, bins. Bins are closed on the right: "≤ e1", "(e1, e2]", ..., and a
  last "> max" bin holds values above every training value, which is itself a warning sign;
- categories: one bin per level in studentperf.features.CATEGORIES;
- either: a "(missing)" bin when either side has missing values, so a form that stops sending
  a field shows up as drift.

    PSI = sum over bins of (recent share - training share) * ln(recent share / training share)

with each share floored at `EPSILON` (1e-4) so an empty bin costs a large but finite amount.
Reading it (the usual rule of thumb): below 0.1 no real change, 0.1-0.2 a moderate shift worth a
look, above 0.2 a shift large enough that the model works outside what it learnt.

For numbers also the two-sample Kolmogorov-Smirnov test (scipy) on the non-missing values: its
p-value is the chance of a gap at least this large between the two empirical distributions if
both were drawn from one population. With thousands of rows it flags shifts too small to matter,
hence a low default threshold and PSI as the main measure.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import ks_2samp

from studentperf.features import CATEGORIES, NUMERIC_FEATURES

NUMERIC_BINS: Final = 10
EPSILON: Final = 1e-4
MISSING: Final = "(missing)"


@dataclass(frozen=True)
class Bin:
    label: str
    reference_share: float
    recent_share: float

    @property
    def psi_term(self) -> float:
        expected = max(self.reference_share, EPSILON)
        actual = max(self.recent_share, EPSILON)
        return (actual - expected) * math.log(actual / expected)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    numeric: bool
    bins: tuple[Bin, ...]
    reference_rows: int
    recent_rows: int
    ks_statistic: float | None = None  # numbers only, None when a side has no values
    ks_pvalue: float | None = None

    @property
    def psi(self) -> float:
        return sum(b.psi_term for b in self.bins)


def _format(value: float) -> str:
    return f"{value:.4g}"


def numeric_edges(reference: npt.ArrayLike, bins: int = NUMERIC_BINS) -> npt.NDArray[np.float64]:
    """The inner quantile edges of the non-missing training values, without repeats."""
    values = np.asarray(reference, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.array([], dtype=np.float64)
    # Edges are training values themselves (no interpolation), so a 0/1 flag gets edges 0 and 1.
    quantiles = np.quantile(values, np.arange(1, bins + 1) / bins, method="inverted_cdf")
    return np.unique(quantiles)


def _numeric_labels(edges: npt.NDArray[np.float64]) -> list[str]:
    if edges.size == 0:
        return ["any value"]
    labels = [f"≤ {_format(edges[0])}"]
    labels += [f"({_format(low)}, {_format(high)}]" for low, high in itertools.pairwise(edges)]
    return [*labels, f"> {_format(edges[-1])}"]


def _shares(codes: npt.NDArray[np.int_], count: int, total: int) -> npt.NDArray[np.float64]:
    found = np.bincount(codes, minlength=count).astype(np.float64)
    return found / total if total else found


def numeric_drift(feature: str, reference: pd.Series, recent: pd.Series) -> FeatureDrift:
    ref = reference.to_numpy(dtype=np.float64, na_value=np.nan)
    new = recent.to_numpy(dtype=np.float64, na_value=np.nan)
    edges = numeric_edges(ref)
    labels = _numeric_labels(edges)
    ref_present, new_present = ref[~np.isnan(ref)], new[~np.isnan(new)]
    # side="left": a value equal to an edge falls in the bin that edge closes.
    ref_shares = _shares(np.searchsorted(edges, ref_present), len(labels), len(ref))
    new_shares = _shares(np.searchsorted(edges, new_present), len(labels), len(new))
    shares = zip(labels, ref_shares, new_shares, strict=True)
    bins = [Bin(label, float(r), float(n)) for label, r, n in shares]
    ref_missing, new_missing = len(ref) - len(ref_present), len(new) - len(new_present)
    bins += _missing_bin(ref_missing, len(ref), new_missing, len(new))
    statistic = pvalue = None
    if ref_present.size and new_present.size:
        test = ks_2samp(ref_present, new_present)
        statistic, pvalue = float(test.statistic), float(test.pvalue)
    return FeatureDrift(feature, True, tuple(bins), len(ref), len(new), statistic, pvalue)


def categorical_drift(feature: str, reference: pd.Series, recent: pd.Series) -> FeatureDrift:
    levels = CATEGORIES[feature]
    ref, new = reference.to_numpy(dtype=object), recent.to_numpy(dtype=object)

    def share(values: npt.NDArray[np.object_], level: str) -> float:
        return float(np.count_nonzero(values == level) / len(values)) if len(values) else 0.0

    bins = [Bin(level, share(ref, level), share(new, level)) for level in levels]
    ref_missing = int(pd.isna(ref).sum()) if len(ref) else 0
    new_missing = int(pd.isna(new).sum()) if len(new) else 0
    bins += _missing_bin(ref_missing, len(ref), new_missing, len(new))
    return FeatureDrift(feature, False, tuple(bins), len(ref), len(new))


def _missing_bin(ref_missing: int, ref_total: int, new_missing: int, new_total: int) -> list[Bin]:
    if not (ref_missing or new_missing):
        return []
    return [
        Bin(
            MISSING,
            ref_missing / ref_total if ref_total else 0.0,
            new_missing / new_total if new_total else 0.0,
        )
    ]


def feature_drift(feature: str, reference: pd.Series, recent: pd.Series) -> FeatureDrift:
    """PSI (and KS for numbers) of one feature column, training values first."""
    if feature in NUMERIC_FEATURES:
        return numeric_drift(feature, reference, recent)
    if feature in CATEGORIES:
        return categorical_drift(feature, reference, recent)
    raise ValueError(f"{feature!r} is not a model feature")
