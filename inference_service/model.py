"""The served model: the trained artifact behind the small `Model` protocol of the core.

Rows are turned into the pipelines' input table column by column (numbers as float64, categories
as objects), once per model call, so a batch pays for one table, not one per student.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from studentperf.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, FeatureValue
from studentperf.model_artifact import LoadedModel, ModelArtifactError, load_artifact
from studentperf.v1.prediction_service_pb2 import ModelInfo

_CATEGORICAL = frozenset(CATEGORICAL_FEATURES)


class ServedModel:
    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded
        self._info = _model_info(loaded)

    @property
    def version(self) -> str:
        return self._loaded.version

    @property
    def pass_mark(self) -> float:
        return self._loaded.model.pass_mark

    def predict(
        self, rows: Sequence[tuple[FeatureValue, ...]]
    ) -> tuple[Sequence[float], Sequence[float]]:
        table = feature_table(rows)
        model = self._loaded.model
        return (
            model.predict_scores(table).tolist(),
            model.pass_probabilities(table).tolist(),
        )

    def info(self) -> ModelInfo:
        return self._info


def feature_table(rows: Sequence[tuple[FeatureValue, ...]]) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for index, name in enumerate(FEATURE_COLUMNS):
        values = [row[index] for row in rows]
        columns[name] = (
            np.array(values, dtype=object)
            if name in _CATEGORICAL
            else np.array(values, dtype=np.float64)
        )
    return pd.DataFrame(columns, columns=list(FEATURE_COLUMNS))


def load_served_model(path: str, *, expected_pass_mark: float) -> ServedModel:
    """Loads the model at `path`; refuses one trained for another pass mark."""
    loaded = load_artifact(path)
    if loaded.model.pass_mark != expected_pass_mark:
        raise ModelArtifactError(
            f"the model in {loaded.path} was trained for pass mark {loaded.model.pass_mark:g}, "
            f"but STUDENTPERF_PASS_MARK is {expected_pass_mark:g}: retrain with "
            f"`make train PASS_MARK={expected_pass_mark:g}` or change the setting"
        )
    return ServedModel(loaded)


def _numbers(section: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) metadata section, named `outer_inner`."""
    found: dict[str, float] = {}
    if isinstance(section, Mapping):
        for key, value in section.items():
            name = f"{prefix}{key}"
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                found[name] = float(value)
            else:
                found.update(_numbers(value, f"{name}_"))
    return found


def _model_info(loaded: LoadedModel) -> ModelInfo:
    meta = loaded.metadata
    info = ModelInfo(
        model_version=loaded.version,
        pass_mark=loaded.model.pass_mark,
        metrics=_numbers(meta.get("metrics", {})),
        baseline_metrics=_numbers(meta.get("baseline_metrics", {})),
        data_source=str(meta.get("data_source", "")),
        training_rows=int(meta.get("train_rows", 0)),
        test_rows=int(meta.get("test_rows", 0)),
    )
    created_at = meta.get("created_at")
    if isinstance(created_at, str):
        info.trained_at.FromDatetime(datetime.fromisoformat(created_at))
    return info
