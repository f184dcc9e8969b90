"""Promotion: the new version becomes `models/current` only if it is not worse than the current.

"Not worse", both on the new version's own test split (rows neither model chose anything on,
as far as the new one knows):

- score RMSE at most `RMSE_TOLERANCE` (1 %) above the current model's, and
- pass ROC-AUC at most `AUC_TOLERANCE` (0.005) below the current model's.

The tolerances keep noise from blocking a retrain on fresh data; a real loss of quality is
refused. If the current model was trained on some of these test rows it has an edge here, so
the gate errs towards keeping it. With nothing to compare against (no current version, one
that cannot be loaded, or one made for another pass mark) the new version is promoted, and
`force` promotes regardless. The comparison and the switch of the link happen under an
exclusive lock on `models/.promote.lock`, so two trainers cannot both compare against the same
old version and then overwrite each other; the switch itself is one atomic rename.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd

from studentperf.features import FEATURE_COLUMNS, TARGET_SCORE
from studentperf.model_artifact import ModelArtifactError, load_artifact, set_current
from trainer.evaluate import Metrics, model_metrics

RMSE_TOLERANCE: Final = 0.01
AUC_TOLERANCE: Final = 0.005
LOCK_FILE: Final = ".promote.lock"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    current_version: str | None = None  # what was served before
    current_metrics: Metrics | None = None  # that version on the new version's test split


def not_worse(candidate: Metrics, current: Metrics) -> tuple[bool, str]:
    """The gate itself: (passes, a sentence with the figures)."""
    rmse_ok = candidate.score_rmse <= current.score_rmse * (1 + RMSE_TOLERANCE)
    auc_ok = candidate.pass_roc_auc >= current.pass_roc_auc - AUC_TOLERANCE
    figures = (
        f"RMSE {candidate.score_rmse:.3f} vs {current.score_rmse:.3f} "
        f"(allowed up to {current.score_rmse * (1 + RMSE_TOLERANCE):.3f}), "
        f"ROC-AUC {candidate.pass_roc_auc:.4f} vs {current.pass_roc_auc:.4f} "
        f"(allowed down to {current.pass_roc_auc - AUC_TOLERANCE:.4f})"
    )
    return rmse_ok and auc_ok, figures


@contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def promote_if_not_worse(
    models_dir: Path,
    version: str,
    candidate: Metrics,
    test: pd.DataFrame,
    *,
    pass_mark: float,
    force: bool = False,
) -> Decision:
    """Compares `version` (already saved under `models_dir`) with `current`; switches if due."""
    with _locked(models_dir):
        decision = _decide(models_dir, candidate, test, pass_mark=pass_mark, force=force)
        if decision.promoted:
            set_current(models_dir, version)
    return decision


def _decide(
    models_dir: Path, candidate: Metrics, test: pd.DataFrame, *, pass_mark: float, force: bool
) -> Decision:
    if not (models_dir / "current").is_symlink():
        return Decision(True, "no current version: promoted")
    try:
        current = load_artifact(models_dir)
    except ModelArtifactError as err:
        return Decision(True, f"the current version cannot be used ({err}): promoted")
    if current.model.pass_mark != pass_mark:
        return Decision(
            True,
            f"the current version {current.version} is for pass mark "
            f"{current.model.pass_mark:g}, not {pass_mark:g}, so not comparable: promoted",
            current.version,
        )
    found = model_metrics(
        current.model, test[list(FEATURE_COLUMNS)], test[TARGET_SCORE].to_numpy(dtype=float)
    )
    passes, figures = not_worse(candidate, found)
    if passes:
        return Decision(
            True, f"not worse than {current.version}: {figures}: promoted", current.version, found
        )
    if force:
        return Decision(
            True,
            f"worse than {current.version} ({figures}) but forced: promoted",
            current.version,
            found,
        )
    return Decision(
        False,
        f"worse than {current.version}: {figures}: NOT promoted (--force overrides)",
        current.version,
        found,
    )
