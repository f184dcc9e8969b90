"""ListStudentPredictions requests checked and page tokens made and read, without a database."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from inference_service.encoding import InvalidInput
from inference_service.history import MAX_PAGE_SIZE, page_query, page_token
from studentperf.history import Cursor
from studentperf.v1.prediction_service_pb2 import ListStudentPredictionsRequest as Request

LAST = Cursor(datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4())


def test_page_sizes_default_and_are_capped() -> None:
    assert page_query(Request(student_id="s-1")).query.limit == 50
    assert page_query(Request(student_id="s-1", page_size=7)).query.limit == 7
    assert page_query(Request(student_id="s-1", page_size=10**6)).query.limit == MAX_PAGE_SIZE


def test_a_token_gives_back_its_cursor_exactly_for_its_own_request() -> None:
    request = Request(student_id="s-1", start_time=Timestamp(seconds=1_700_000_000, nanos=5000))
    bounds = page_query(request).bounds
    request.page_token = page_token("s-1", bounds, LAST)
    assert page_query(request).query.after == LAST


@pytest.mark.parametrize(
    "change",
    [
        {"student_id": "s-2"},
        {"end_time": Timestamp(seconds=1_800_000_000)},
        {"page_token": "not a token"},
        {"page_token": base64.urlsafe_b64encode(b"1 s-1   12 zz").decode()},
    ],
)
def test_a_token_of_another_request_or_of_nobody_is_refused(change: dict[str, object]) -> None:
    request = Request(student_id="s-1", page_token=page_token("s-1", (None, None), LAST))
    for name, value in change.items():
        if isinstance(value, Timestamp):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    with pytest.raises(InvalidInput) as refused:
        page_query(request)
    assert [v.field for v in refused.value.violations] == ["page_token"]


T = 1_767_225_600  # 2026-01-01T00:00:00Z, a prediction's predicted_at (microseconds stored)
AT_T = datetime.fromtimestamp(T, UTC)


def test_bounds_below_a_microsecond_keep_start_inclusive_and_end_exclusive() -> None:
    after_t = Timestamp(seconds=T, nanos=500)
    start = page_query(Request(student_id="s-1", start_time=after_t)).query.start
    end = page_query(Request(student_id="s-1", end_time=after_t)).query.end
    assert start is not None and end is not None
    assert start > AT_T, "a prediction before start_time is listed"
    assert end > AT_T, "a prediction before end_time is left out"


def test_a_range_inside_one_microsecond_is_valid_and_holds_nothing() -> None:
    query = page_query(
        Request(
            student_id="s-1",
            start_time=Timestamp(seconds=T, nanos=100),
            end_time=Timestamp(seconds=T, nanos=900),
        )
    ).query
    assert query.start == query.end  # [start, end): no stored moment
    with pytest.raises(InvalidInput, match="end_time"):
        page_query(
            Request(
                student_id="s-1",
                start_time=Timestamp(seconds=T, nanos=900),
                end_time=Timestamp(seconds=T, nanos=100),
            )
        )


def test_nanos_of_a_bound_run_from_0_to_999_999_999() -> None:
    last = Timestamp(seconds=T, nanos=999_999_999)
    assert page_query(Request(student_id="s-1", start_time=last)).query.start is not None
    for nanos in (1_000_000_000, -1):
        with pytest.raises(InvalidInput, match="start_time: nanos must be 0-999,999,999"):
            page_query(Request(student_id="s-1", start_time=Timestamp(seconds=T, nanos=nanos)))
