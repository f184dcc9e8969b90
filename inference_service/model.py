"""The served model: the trained artifact behind the small `Model` protocol of the core.

Predictions take the compiled path of `inference_service.fast_model` (numpy arrays, no pandas;
plain floats for a few rows through linear models) when the pipelines have the trainer's known
shape, and the pipelines themselves otherwise.
Explanations, and the fallback, turn rows into the pipelines' input table column by column
(numbers as float64, categories as objects), once per model call, so a batch pays for one
table, not one per student. Model calls hold OpenMP to one thread: calls already run
concurrently in worker threads, and gradient boosting fanning each one out over every core as
well only makes them wait on each other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import sklearn  # noqa: F401  (loads its OpenMP runtime, which the controller must see)
from threadpoolctl import ThreadpoolController

from inference_service.core import ScoreContributions
from inference_service.fast_model import CompiledModel, NotCompilable, compile_model
from inference_service.fast_model import feature_table as feature_table
from studentperf.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    FEATURE_PATHS,
    SCORE_RANGE,
    FeatureValue,
)
from studentperf.group_quality_record import GroupQuality as GroupQualityRecord
from studentperf.model_artifact import LoadedModel, ModelArtifactError, load_artifact
from studentperf.score_interval import ScoreInterval
from studentperf.v1.prediction_service_pb2 import (
    FeatureImportance,
    GroupAttributeQuality,
    GroupFigures,
    GroupGap,
    GroupQuality,
    ModelInfo,
    PassCalibrationInfo,
    ScoreIntervalInfo,
)

log = logging.getLogger(__name__)

_CATEGORICAL = frozenset(CATEGORICAL_FEATURES)
_THREADPOOLS = ThreadpoolController()
_INLINE_ROWS = 1000


class ServedModel:
    def __init__(self, loaded: LoadedModel) -> None:
        self._loaded = loaded
        self._info = _model_info(loaded)
        self._compiled: CompiledModel | None = None
        try:
            self._compiled = compile_model(loaded.model.regressor, loaded.model.classifier)
        except NotCompilable as reason:
            log.warning(
                "model %s: serving through the scikit-learn pipelines (slower): %s",
                loaded.version,
                reason,
            )

    @property
    def inline_rows(self) -> int:
        """Up to how many rows a prediction is cheap enough to run on the event loop (about a
        millisecond): the compiled linear models only; see PredictionCore."""
        compiled = self._compiled
        return _INLINE_ROWS if compiled is not None and compiled.linear else 0

    @property
    def compiled(self) -> bool:
        """True when predictions take the numpy path rather than the DataFrame pipelines."""
        return self._compiled is not None

    @property
    def version(self) -> str:
        return self._loaded.version

    @property
    def score_interval(self) -> ScoreInterval | None:
        return self._loaded.model.score_interval

    @property
    def pass_mark(self) -> float:
        return self._loaded.model.pass_mark

    @property
    def path(self) -> str:
        return str(self._loaded.path)

    def predict(
        self, rows: Sequence[tuple[FeatureValue, ...]]
    ) -> tuple[Sequence[float], Sequence[float]]:
        compiled = self._compiled
        few = compiled.predict_few(rows) if compiled is not None else None
        if few is not None:
            low, high = SCORE_RANGE
            raw, uncalibrated = few
            calibrated = self._loaded.model.calibrate(uncalibrated)
            return [min(max(score, low), high) for score in raw], calibrated.tolist()
        if compiled is not None:
            # Limiting OpenMP costs tens of microseconds: only worth it when an estimator runs.
            limit = (
                contextlib.nullcontext()
                if compiled.linear
                else _THREADPOOLS.limit(limits=1, user_api="openmp")
            )
            with limit:
                scores, probabilities = compiled.predict(rows)
            # The calibration map is plain numpy, applied after the compiled classifier as
            # StudentModel.pass_probabilities applies it after the pipeline.
            calibrated = self._loaded.model.calibrate(probabilities)
            return np.clip(scores, *SCORE_RANGE).tolist(), calibrated.tolist()
        table = feature_table(rows)
        model = self._loaded.model
        with _THREADPOOLS.limit(limits=1, user_api="openmp"):
            return (
                model.predict_scores(table).tolist(),
                model.pass_probabilities(table).tolist(),
            )

    def explain(self, rows: Sequence[tuple[FeatureValue, ...]]) -> Sequence[ScoreContributions]:
        with _THREADPOOLS.limit(limits=1, user_api="openmp"):
            found = self._loaded.model.explain_scores(feature_table(rows))
        return [
            ScoreContributions(base=found.base, raw=float(raw), contributions=tuple(row.tolist()))
            for raw, row in zip(found.raw, found.contributions, strict=True)
        ]

    def warm_up(self) -> None:
        """One prediction and explanation of an all-missing row, so that lazy set-up inside the
        libraries happens now, not in the first call served."""
        empty: tuple[FeatureValue, ...] = tuple(
            None if name in _CATEGORICAL else float("nan") for name in FEATURE_COLUMNS
        )
        self.predict([empty])
        self.explain([empty])

    def info(self) -> ModelInfo:
        return self._info


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


def _importances(meta: Mapping[str, Any]) -> list[FeatureImportance]:
    listed = meta.get("feature_importances", [])
    return [
        FeatureImportance(feature=str(item["feature"]), rmse_increase=float(item["rmse_increase"]))
        for item in listed
        if isinstance(item, Mapping)
    ]


def _group_quality(found: Mapping[str, Any]) -> GroupQuality:
    """metadata.json's `group_quality` (read by studentperf.group_quality_record) as the
    message; figures left undefined (null) are left out of the map, and stated_coverage is
    unset where the record has none (no intervals, or written before it was recorded)."""
    record = GroupQualityRecord.from_dict(found)
    return GroupQuality(
        rows=record.rows,
        min_group_rows=record.min_group_rows,
        min_class_rows=record.min_class_rows,
        resamples=record.resamples,
        seed=record.seed,
        stated_coverage=record.stated_coverage,
        attributes=[
            GroupAttributeQuality(
                attribute=FEATURE_PATHS.get(a.attribute, a.attribute),
                groups=[
                    GroupFigures(
                        group=g.group,
                        rows=g.rows,
                        judged=g.judged,
                        figures={k: float(v) for k, v in g.figures.items() if v is not None},
                    )
                    for g in a.groups
                ],
                gaps=[
                    GroupGap(
                        figure=g.figure,
                        gap=g.gap,
                        highest_group=g.highest,
                        lowest_group=g.lowest,
                        interval_low=g.interval_low,
                        interval_high=g.interval_high,
                        level=g.level,
                        beyond_noise=g.beyond_noise,
                    )
                    for g in a.gaps
                ],
            )
            for a in record.attributes
        ],
    )


def _model_info(loaded: LoadedModel) -> ModelInfo:
    meta = loaded.metadata
    estimators = meta.get("estimators", {})
    info = ModelInfo(
        model_version=loaded.version,
        pass_mark=loaded.model.pass_mark,
        metrics=_numbers(meta.get("metrics", {})),
        baseline_metrics=_numbers(meta.get("baseline_metrics", {})),
        data_source=str(meta.get("data_source", "")),
        training_rows=int(meta.get("fit_rows", meta.get("train_rows", 0))),
        test_rows=int(meta.get("test_rows", 0)),
        feature_importances=_importances(meta),
        score_estimator=str(estimators.get("score", "")),
        pass_estimator=str(estimators.get("pass", "")),
        explanation_method=loaded.model.explanation_method,
        validation_rows=int(meta.get("validation_rows", 0)),
        data_sha256=str(meta.get("data_sha256", "")),
    )
    created_at = meta.get("created_at")
    if isinstance(created_at, str):
        info.trained_at.FromDatetime(datetime.fromisoformat(created_at))
    interval, calibration = meta.get("score_interval"), meta.get("pass_calibration")
    try:
        if isinstance(interval, Mapping):
            info.score_interval.CopyFrom(
                ScoreIntervalInfo(
                    half_width=float(interval["half_width"]),
                    coverage=float(interval["coverage"]),
                    test_coverage=float(interval["test_coverage"]),
                    test_mean_width=float(interval["test_mean_width"]),
                    validation_rows=int(interval["validation_rows"]),
                )
            )
        if isinstance(calibration, Mapping):
            info.pass_calibration.CopyFrom(
                PassCalibrationInfo(
                    applied=bool(calibration["applied"]),
                    test_ece_before=float(calibration["test_ece_before"]),
                    test_ece_after=float(calibration["test_ece_after"]),
                )
            )
    except (KeyError, TypeError, ValueError) as err:
        log.warning("metadata.json of %s: unreadable interval figures: %s", loaded.version, err)
    groups = meta.get("group_quality")
    if isinstance(groups, Mapping):
        try:
            info.group_quality.CopyFrom(_group_quality(groups))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            # The model still serves; only this part of GetModelInfo is missing.
            log.warning("metadata.json of %s: unreadable group_quality: %s", loaded.version, err)
    return info
