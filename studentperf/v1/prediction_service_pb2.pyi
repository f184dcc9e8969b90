import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import code_pb2 as _code_pb2
from google.rpc import error_details_pb2 as _error_details_pb2
from studentperf.v1 import student_pb2 as _student_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("student", "top_factors", "term")
    STUDENT_FIELD_NUMBER: _ClassVar[int]
    TOP_FACTORS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    student: _student_pb2.Student
    top_factors: int
    term: str
    def __init__(self, student: _Optional[_Union[_student_pb2.Student, _Mapping]] = ..., top_factors: _Optional[int] = ..., term: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("prediction",)
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ...) -> None: ...

class BatchPredictRequest(_message.Message):
    __slots__ = ("students", "top_factors", "term")
    STUDENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_FACTORS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    students: _containers.RepeatedCompositeFieldContainer[_student_pb2.Student]
    top_factors: int
    term: str
    def __init__(self, students: _Optional[_Iterable[_Union[_student_pb2.Student, _Mapping]]] = ..., top_factors: _Optional[int] = ..., term: _Optional[str] = ...) -> None: ...

class BatchPredictResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchPredictResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchPredictResult, _Mapping]]] = ...) -> None: ...

class BatchPredictResult(_message.Message):
    __slots__ = ("prediction", "error")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    error: ItemError
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "bad_request")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BAD_REQUEST_FIELD_NUMBER: _ClassVar[int]
    code: _code_pb2.Code
    message: str
    bad_request: _error_details_pb2.BadRequest
    def __init__(self, code: _Optional[_Union[_code_pb2.Code, str]] = ..., message: _Optional[str] = ..., bad_request: _Optional[_Union[_error_details_pb2.BadRequest, _Mapping]] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("prediction_id", "predicted_final_score", "pass_probability", "predicted_pass", "model_version", "imputed_fields", "pass_mark", "explanation", "term", "score_interval_low", "score_interval_high", "interval_coverage")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FINAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    PASS_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_PASS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IMPUTED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    PASS_MARK_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    SCORE_INTERVAL_LOW_FIELD_NUMBER: _ClassVar[int]
    SCORE_INTERVAL_HIGH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    predicted_final_score: float
    pass_probability: float
    predicted_pass: bool
    model_version: str
    imputed_fields: _containers.RepeatedScalarFieldContainer[str]
    pass_mark: float
    explanation: ScoreExplanation
    term: str
    score_interval_low: float
    score_interval_high: float
    interval_coverage: float
    def __init__(self, prediction_id: _Optional[str] = ..., predicted_final_score: _Optional[float] = ..., pass_probability: _Optional[float] = ..., predicted_pass: _Optional[bool] = ..., model_version: _Optional[str] = ..., imputed_fields: _Optional[_Iterable[str]] = ..., pass_mark: _Optional[float] = ..., explanation: _Optional[_Union[ScoreExplanation, _Mapping]] = ..., term: _Optional[str] = ..., score_interval_low: _Optional[float] = ..., score_interval_high: _Optional[float] = ..., interval_coverage: _Optional[float] = ...) -> None: ...

class ScoreExplanation(_message.Message):
    __slots__ = ("base_score", "top_factors", "other_factors", "raw_score")
    BASE_SCORE_FIELD_NUMBER: _ClassVar[int]
    TOP_FACTORS_FIELD_NUMBER: _ClassVar[int]
    OTHER_FACTORS_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORE_FIELD_NUMBER: _ClassVar[int]
    base_score: float
    top_factors: _containers.RepeatedCompositeFieldContainer[FactorContribution]
    other_factors: float
    raw_score: float
    def __init__(self, base_score: _Optional[float] = ..., top_factors: _Optional[_Iterable[_Union[FactorContribution, _Mapping]]] = ..., other_factors: _Optional[float] = ..., raw_score: _Optional[float] = ...) -> None: ...

class FactorContribution(_message.Message):
    __slots__ = ("feature", "contribution", "imputed")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    IMPUTED_FIELD_NUMBER: _ClassVar[int]
    feature: str
    contribution: float
    imputed: bool
    def __init__(self, feature: _Optional[str] = ..., contribution: _Optional[float] = ..., imputed: _Optional[bool] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_version", "trained_at", "pass_mark", "metrics", "baseline_metrics", "data_source", "training_rows", "test_rows", "feature_importances", "score_estimator", "pass_estimator", "explanation_method", "validation_rows", "data_sha256", "group_quality", "score_interval", "pass_calibration")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BaselineMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    PASS_MARK_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_METRICS_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_ROWS_FIELD_NUMBER: _ClassVar[int]
    TEST_ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_IMPORTANCES_FIELD_NUMBER: _ClassVar[int]
    SCORE_ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    PASS_ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_METHOD_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    DATA_SHA256_FIELD_NUMBER: _ClassVar[int]
    GROUP_QUALITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    PASS_CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    trained_at: _timestamp_pb2.Timestamp
    pass_mark: float
    metrics: _containers.ScalarMap[str, float]
    baseline_metrics: _containers.ScalarMap[str, float]
    data_source: str
    training_rows: int
    test_rows: int
    feature_importances: _containers.RepeatedCompositeFieldContainer[FeatureImportance]
    score_estimator: str
    pass_estimator: str
    explanation_method: str
    validation_rows: int
    data_sha256: str
    group_quality: GroupQuality
    score_interval: ScoreIntervalInfo
    pass_calibration: PassCalibrationInfo
    def __init__(self, model_version: _Optional[str] = ..., trained_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pass_mark: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., baseline_metrics: _Optional[_Mapping[str, float]] = ..., data_source: _Optional[str] = ..., training_rows: _Optional[int] = ..., test_rows: _Optional[int] = ..., feature_importances: _Optional[_Iterable[_Union[FeatureImportance, _Mapping]]] = ..., score_estimator: _Optional[str] = ..., pass_estimator: _Optional[str] = ..., explanation_method: _Optional[str] = ..., validation_rows: _Optional[int] = ..., data_sha256: _Optional[str] = ..., group_quality: _Optional[_Union[GroupQuality, _Mapping]] = ..., score_interval: _Optional[_Union[ScoreIntervalInfo, _Mapping]] = ..., pass_calibration: _Optional[_Union[PassCalibrationInfo, _Mapping]] = ...) -> None: ...

class ScoreIntervalInfo(_message.Message):
    __slots__ = ("half_width", "coverage", "test_coverage", "test_mean_width", "validation_rows")
    HALF_WIDTH_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    TEST_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    TEST_MEAN_WIDTH_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    half_width: float
    coverage: float
    test_coverage: float
    test_mean_width: float
    validation_rows: int
    def __init__(self, half_width: _Optional[float] = ..., coverage: _Optional[float] = ..., test_coverage: _Optional[float] = ..., test_mean_width: _Optional[float] = ..., validation_rows: _Optional[int] = ...) -> None: ...

class PassCalibrationInfo(_message.Message):
    __slots__ = ("applied", "test_ece_before", "test_ece_after")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    TEST_ECE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TEST_ECE_AFTER_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    test_ece_before: float
    test_ece_after: float
    def __init__(self, applied: _Optional[bool] = ..., test_ece_before: _Optional[float] = ..., test_ece_after: _Optional[float] = ...) -> None: ...

class FeatureImportance(_message.Message):
    __slots__ = ("feature", "rmse_increase")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    RMSE_INCREASE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    rmse_increase: float
    def __init__(self, feature: _Optional[str] = ..., rmse_increase: _Optional[float] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("student_id", "term", "final_score")
    STUDENT_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    FINAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    student_id: str
    term: str
    final_score: float
    def __init__(self, student_id: _Optional[str] = ..., term: _Optional[str] = ..., final_score: _Optional[float] = ...) -> None: ...

class RecordOutcomesRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class RecordOutcomesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecordOutcomeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RecordOutcomeResult, _Mapping]]] = ...) -> None: ...

class RecordOutcomeResult(_message.Message):
    __slots__ = ("stored", "error")
    STORED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stored: OutcomeStored
    error: ItemError
    def __init__(self, stored: _Optional[_Union[OutcomeStored, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class OutcomeStored(_message.Message):
    __slots__ = ("replaced", "student_added", "event_id")
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    STUDENT_ADDED_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    replaced: bool
    student_added: bool
    event_id: str
    def __init__(self, replaced: _Optional[bool] = ..., student_added: _Optional[bool] = ..., event_id: _Optional[str] = ...) -> None: ...

class ListStudentPredictionsRequest(_message.Message):
    __slots__ = ("student_id", "page_size", "page_token", "start_time", "end_time")
    STUDENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    student_id: str
    page_size: int
    page_token: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, student_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListStudentPredictionsResponse(_message.Message):
    __slots__ = ("predictions", "next_page_token")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[StudentPrediction]
    next_page_token: str
    def __init__(self, predictions: _Optional[_Iterable[_Union[StudentPrediction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StudentPrediction(_message.Message):
    __slots__ = ("prediction", "student", "predicted_at", "outcome_final_score")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    STUDENT_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FINAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    student: _student_pb2.Student
    predicted_at: _timestamp_pb2.Timestamp
    outcome_final_score: float
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., student: _Optional[_Union[_student_pb2.Student, _Mapping]] = ..., predicted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome_final_score: _Optional[float] = ...) -> None: ...

class EraseStudentRequest(_message.Message):
    __slots__ = ("student_id", "reason")
    STUDENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    student_id: str
    reason: str
    def __init__(self, student_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseStudentResponse(_message.Message):
    __slots__ = ("erasure_id", "confirmed", "removed", "summary")
    class RemovedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ERASURE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    erasure_id: str
    confirmed: bool
    removed: _containers.ScalarMap[str, int]
    summary: str
    def __init__(self, erasure_id: _Optional[str] = ..., confirmed: _Optional[bool] = ..., removed: _Optional[_Mapping[str, int]] = ..., summary: _Optional[str] = ...) -> None: ...

class GroupQuality(_message.Message):
    __slots__ = ("rows", "min_group_rows", "min_class_rows", "resamples", "seed", "attributes")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_ROWS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLASS_ROWS_FIELD_NUMBER: _ClassVar[int]
    RESAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    min_group_rows: int
    min_class_rows: int
    resamples: int
    seed: int
    attributes: _containers.RepeatedCompositeFieldContainer[GroupAttributeQuality]
    def __init__(self, rows: _Optional[int] = ..., min_group_rows: _Optional[int] = ..., min_class_rows: _Optional[int] = ..., resamples: _Optional[int] = ..., seed: _Optional[int] = ..., attributes: _Optional[_Iterable[_Union[GroupAttributeQuality, _Mapping]]] = ...) -> None: ...

class GroupAttributeQuality(_message.Message):
    __slots__ = ("attribute", "groups", "gaps")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    groups: _containers.RepeatedCompositeFieldContainer[GroupFigures]
    gaps: _containers.RepeatedCompositeFieldContainer[GroupGap]
    def __init__(self, attribute: _Optional[str] = ..., groups: _Optional[_Iterable[_Union[GroupFigures, _Mapping]]] = ..., gaps: _Optional[_Iterable[_Union[GroupGap, _Mapping]]] = ...) -> None: ...

class GroupFigures(_message.Message):
    __slots__ = ("group", "rows", "judged", "figures")
    class FiguresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    group: str
    rows: int
    judged: bool
    figures: _containers.ScalarMap[str, float]
    def __init__(self, group: _Optional[str] = ..., rows: _Optional[int] = ..., judged: _Optional[bool] = ..., figures: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GroupGap(_message.Message):
    __slots__ = ("figure", "gap", "highest_group", "lowest_group", "interval_low", "interval_high", "level", "beyond_noise")
    FIGURE_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_GROUP_FIELD_NUMBER: _ClassVar[int]
    LOWEST_GROUP_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LOW_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_HIGH_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    BEYOND_NOISE_FIELD_NUMBER: _ClassVar[int]
    figure: str
    gap: float
    highest_group: str
    lowest_group: str
    interval_low: float
    interval_high: float
    level: float
    beyond_noise: bool
    def __init__(self, figure: _Optional[str] = ..., gap: _Optional[float] = ..., highest_group: _Optional[str] = ..., lowest_group: _Optional[str] = ..., interval_low: _Optional[float] = ..., interval_high: _Optional[float] = ..., level: _Optional[float] = ..., beyond_noise: _Optional[bool] = ...) -> None: ...
