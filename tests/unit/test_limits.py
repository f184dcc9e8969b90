"""The request-size limit fits the largest valid request, measured, with little room beyond."""

from __future__ import annotations

from inference_service.settings import Settings
from studentperf.largest_items import (
    LONGEST_TERM,
    LONGEST_TOP_FACTORS,
    largest_outcome,
    largest_student,
)
from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_REQUEST_BYTES,
    LARGEST_ITEM_BYTES,
    MAX_EXPLAINED_BATCH,
    REQUEST_FIELDS_BYTES,
    max_request_bytes,
)
from studentperf.v1 import prediction_service_pb2 as api


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
