"""The request-size limit fits the largest valid request, measured, with little room beyond; the
response limit fits the largest answer to a full batch, measured too."""

from __future__ import annotations

from typing import Any

import pytest

from inference_service.encoding import InvalidInput, encode_student
from inference_service.outcomes import encode_outcomes
from inference_service.servicer import _outcome_result, _result
from inference_service.settings import Settings
from studentperf.config import ConfigError
from studentperf.features import FEATURE_COLUMNS, FEATURE_PATHS
from studentperf.largest_items import (
    LONGEST_TERM,
    LONGEST_TOP_FACTORS,
    largest_outcome,
    largest_student,
)
from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    LARGEST_ANSWER_BYTES,
    LARGEST_ITEM_BYTES,
    MAX_BATCH_SIZE,
    MAX_EXPLAINED_BATCH,
    REQUEST_FIELDS_BYTES,
    max_request_bytes,
    max_response_bytes,
)
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

# The longest enum number echoed back in a refusal (an int the stubs type as each enum's own).
LOWEST_ENUM: Any = -(2**31)
# Every rule broken at once: no id, an age out of range, four unknown enum numbers, three
# numbers out of range (the flag has no rule to break).
WORST_STUDENT = Student(
    profile=StudentProfile(
        age=0,
        gender=LOWEST_ENUM,
        parental_education=LOWEST_ENUM,
        lunch_program=LOWEST_ENUM,
        test_preparation=LOWEST_ENUM,
    ),
    academic_record=AcademicRecord(
        attendance_percentage=-1.0, study_hours_per_week=-1.0, previous_gpa=-1.0
    ),
)


def refused_student(index: int) -> api.BatchPredictResult:
    with pytest.raises(InvalidInput) as refused:
        encode_student(WORST_STUDENT, f"students[{index}]")
    assert len(refused.value.violations) == 9
    return _result(refused.value)


def largest_prediction() -> api.BatchPredictResult:
    """Every field of a prediction at its longest: a 128-character version, every input imputed,
    an explanation of every input, the longest term, an interval."""
    prediction = api.Prediction(
        prediction_id="00000000-0000-4000-8000-000000000000",
        predicted_final_score=99.123456789,
        pass_probability=0.123456789,
        predicted_pass=True,
        model_version="v" * 128,
        imputed_fields=list(FEATURE_PATHS.values()),
        pass_mark=50.5,
        term=LONGEST_TERM,
        score_interval_low=90.1,
        score_interval_high=99.9,
        interval_coverage=0.8,
    )
    prediction.explanation.base_score = 55.5
    prediction.explanation.other_factors = -1.5
    prediction.explanation.raw_score = 101.5
    for feature in FEATURE_COLUMNS:
        prediction.explanation.top_factors.add(feature=feature, contribution=-12.345, imputed=True)
    return api.BatchPredictResult(prediction=prediction)


def test_the_largest_items_and_fields_take_what_the_limits_say() -> None:
    one_student = api.BatchPredictRequest(students=[largest_student()])
    one_outcome = api.RecordOutcomesRequest(outcomes=[largest_outcome()])
    assert len(one_outcome.outcomes[0].term) == 32
    assert one_student.ByteSize() == one_outcome.ByteSize() == LARGEST_ITEM_BYTES
    one_student.top_factors = LONGEST_TOP_FACTORS
    one_student.term = LONGEST_TERM
    assert one_student.ByteSize() == LARGEST_ITEM_BYTES + REQUEST_FIELDS_BYTES


def test_the_default_limit_fits_the_largest_valid_request_with_little_room() -> None:
    students = [largest_student()] * DEFAULT_MAX_BATCH_SIZE
    batch = api.BatchPredictRequest(
        students=students, top_factors=LONGEST_TOP_FACTORS, term=LONGEST_TERM
    )
    explained = api.BatchPredictRequest(
        students=students[:MAX_EXPLAINED_BATCH], top_factors=LONGEST_TOP_FACTORS, term=LONGEST_TERM
    )
    outcomes = api.RecordOutcomesRequest(outcomes=[largest_outcome()] * DEFAULT_MAX_BATCH_SIZE)
    single = api.PredictRequest(
        student=largest_student(), top_factors=LONGEST_TOP_FACTORS, term=LONGEST_TERM
    )
    largest = max(r.ByteSize() for r in (batch, explained, outcomes, single))
    print(f"largest valid request: {largest:,} bytes; limit {DEFAULT_MAX_REQUEST_BYTES:,}")
    assert largest == batch.ByteSize() == 1_110_040
    assert largest < DEFAULT_MAX_REQUEST_BYTES <= largest * 1.0625


def test_the_limit_follows_the_batch_size_unless_set() -> None:
    assert Settings.from_env({}).max_request_bytes == DEFAULT_MAX_REQUEST_BYTES
    doubled = Settings.from_env({"STUDENTPERF_MAX_BATCH_SIZE": "20000"})
    assert doubled.max_request_bytes == max_request_bytes(20_000) > 2 * 1_110_000
    assert max_request_bytes(1) == 4096
    chosen = Settings.from_env(
        {"STUDENTPERF_MAX_BATCH_SIZE": "20000", "STUDENTPERF_MAX_REQUEST_BYTES": "65536"}
    )
    assert chosen.max_request_bytes == 65536


def test_the_largest_answer_to_an_item_takes_what_the_limits_say() -> None:
    def on_the_wire(result: api.BatchPredictResult | api.RecordOutcomeResult) -> int:
        return (
            api.BatchPredictResponse(results=[result]).ByteSize()
            if isinstance(result, api.BatchPredictResult)
            else api.RecordOutcomesResponse(results=[result]).ByteSize()
        )

    longest_index = MAX_BATCH_SIZE - 1
    assert on_the_wire(refused_student(longest_index)) <= LARGEST_ANSWER_BYTES
    # Not a loose bound: at the default batch size's indexes it is within a few bytes.
    assert on_the_wire(refused_student(DEFAULT_MAX_BATCH_SIZE - 1)) > LARGEST_ANSWER_BYTES - 30
    assert on_the_wire(largest_prediction()) < LARGEST_ANSWER_BYTES
    # An outcome breaking every rule, and one of many copies of one student and term.
    broken, copy, *_ = encode_outcomes(
        [api.Outcome(term="x" * 1000)]
        + [api.Outcome(student_id="s", term="2026-a", final_score=1)] * 9
    )
    assert isinstance(broken, InvalidInput) and isinstance(copy, InvalidInput)
    for refused in (broken, copy):
        assert on_the_wire(_outcome_result(refused)) < LARGEST_ANSWER_BYTES


def test_the_default_response_limit_fits_a_full_batch_of_the_largest_answers() -> None:
    answer = api.BatchPredictResponse(
        results=[refused_student(i) for i in range(DEFAULT_MAX_BATCH_SIZE)]
    )
    print(f"largest answer: {answer.ByteSize():,} bytes; limit {DEFAULT_MAX_MESSAGE_BYTES:,}")
    assert answer.ByteSize() <= max_response_bytes(DEFAULT_MAX_BATCH_SIZE)
    assert max_response_bytes(DEFAULT_MAX_BATCH_SIZE) <= DEFAULT_MAX_MESSAGE_BYTES


def test_the_response_limit_follows_the_batch_size_and_is_never_set_below_it() -> None:
    assert Settings.from_env({}).max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    larger = Settings.from_env({"STUDENTPERF_MAX_BATCH_SIZE": "20000"})
    assert larger.max_message_bytes == max_response_bytes(20_000) > DEFAULT_MAX_MESSAGE_BYTES
    with pytest.raises(ConfigError, match="STUDENTPERF_MAX_MESSAGE_BYTES=1048576 is too small"):
        Settings.from_env({"STUDENTPERF_MAX_MESSAGE_BYTES": str(1 << 20)})
    with pytest.raises(ConfigError, match="STUDENTPERF_MAX_BATCH_SIZE"):
        Settings.from_env({"STUDENTPERF_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE + 1)})
