"""ListStudentPredictions without I/O: the request checked, page tokens, rows as messages.

A page token is the keyset of the page's last prediction, (predicted_at, prediction_id), bound
to the request it came from (student and time range), base64url-encoded: opaque to callers,
and one sent with another request, or not made here, is refused naming page_token.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp

from inference_service.encoding import FieldViolation, InvalidInput
from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.features import ACADEMIC_RECORD_FEATURES, PROFILE_FEATURES
from studentperf.history import Cursor, PageQuery
from studentperf.student_id import STUDENT_ID_RULE, student_id_is_valid
from studentperf.v1.prediction_service_pb2 import (
    ListStudentPredictionsRequest,
    Prediction,
    ScoreExplanation,
    StudentPrediction,
)
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TOKEN_VERSION = "1"
_BAD_TOKEN = (
    "not a next_page_token of this student and time range: pass the one the previous page "
    "returned, unchanged, with the same student_id, start_time and end_time"
)
_NUMBER_BY_CATEGORY = {
    field: {name: number for number, name in categories.items()}
    for field, categories in CATEGORY_BY_NUMBER.items()
}


@dataclass(frozen=True, slots=True)
class HistoryPage:
    query: PageQuery
    # The request's bounds in microseconds, which tokens are bound to (None: not given).
    bounds: tuple[int | None, int | None]


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _bound(
    request: ListStudentPredictionsRequest, name: Literal["start_time", "end_time"]
) -> int | None:
    if not request.HasField(name):
        return None
    stamp: Timestamp = getattr(request, name)
    if not 0 <= stamp.nanos < 1_000_000_000:
        raise InvalidInput([FieldViolation(name, "nanos must be 0-999,999,999")])
    # Up to the next microsecond (predicted_at's precision): exact for an inclusive start and
    # an exclusive end alike, where truncating let in a prediction before start_time.
    micros = stamp.seconds * 1_000_000 + -(-stamp.nanos // 1000)
    # PostgreSQL's timestamptz spans years 4713 BC-294276 AD; a Python datetime 1-9999.
    if (
        not _micros(datetime(1, 1, 2, tzinfo=UTC))
        <= micros
        <= _micros(datetime(9999, 12, 30, tzinfo=UTC))
    ):
        raise InvalidInput([FieldViolation(name, "must be between years 1 and 9999")])
    return micros


def _nanos(stamp: Timestamp) -> int:
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def page_token(student_id: str, bounds: tuple[int | None, int | None], last: Cursor) -> str:
    fields = [
        _TOKEN_VERSION,
        student_id,
        *("" if b is None else str(b) for b in bounds),
        str(_micros(last.predicted_at)),
        last.prediction_id.hex,
    ]
    return base64.urlsafe_b64encode(" ".join(fields).encode()).decode()


def _cursor(token: str, student_id: str, bounds: tuple[int | None, int | None]) -> Cursor:
    try:
        fields = base64.urlsafe_b64decode(token.encode("ascii")).decode().split(" ")
        version, sid, start, end, micros, pid = fields
        if (version, sid, start, end) != (
            _TOKEN_VERSION,
            student_id,
            *("" if b is None else str(b) for b in bounds),
        ):
            raise ValueError("another request's token")
        return Cursor(_from_micros(int(micros)), uuid.UUID(hex=pid))
    except (ValueError, UnicodeError, binascii.Error, OverflowError) as error:
        raise InvalidInput([FieldViolation("page_token", _BAD_TOKEN)]) from error


def page_query(request: ListStudentPredictionsRequest) -> HistoryPage:
    """The page the request asks for; raises InvalidInput naming every bad field."""
    violations: list[FieldViolation] = []
    if not student_id_is_valid(request.student_id):
        violations.append(FieldViolation("student_id", STUDENT_ID_RULE))
    if request.page_size < 0:
        violations.append(
            FieldViolation("page_size", f"must be 0 (for {DEFAULT_PAGE_SIZE}) or more")
        )
    bounds: list[int | None] = [None, None]
    bound_names: tuple[Literal["start_time", "end_time"], ...] = ("start_time", "end_time")
    for index, name in enumerate(bound_names):
        try:
            bounds[index] = _bound(request, name)
        except InvalidInput as refused:
            violations.extend(refused.violations)
    start, end = bounds
    # Compared as given: a range inside one microsecond holds no stored moment, but is valid.
    if (
        start is not None
        and end is not None
        and _nanos(request.end_time) <= _nanos(request.start_time)
    ):
        violations.append(FieldViolation("end_time", "must be after start_time"))
    if violations:
        raise InvalidInput(violations)
    after = (
        _cursor(request.page_token, request.student_id, (start, end))
        if request.page_token
        else None
    )
    return HistoryPage(
        PageQuery(
            student_id=request.student_id,
            limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            start=None if start is None else _from_micros(start),
            end=None if end is None else _from_micros(end),
            after=after,
        ),
        (start, end),
    )


def student_prediction(row: Mapping[str, Any], student_id: str) -> StudentPrediction:
    """One history row as its message: the prediction as answered, with its inputs."""
    prediction = Prediction(
        prediction_id=str(row["prediction_id"]),
        predicted_final_score=row["predicted_final_score"],
        pass_probability=row["pass_probability"],
        predicted_pass=row["predicted_pass"],
        model_version=row["model_version"],
        imputed_fields=row["imputed_fields"],
        pass_mark=row["pass_mark"],
        term=row["term"] or "",
    )
    for name in ("score_interval_low", "score_interval_high", "interval_coverage"):
        if row[name] is not None:  # NULL: the model had no interval; left unset, as answered
            setattr(prediction, name, row[name])
    if row["explanation"] is not None:
        prediction.explanation.CopyFrom(ScoreExplanation.FromString(row["explanation"]))
    profile = StudentProfile(student_id=student_id)
    for name in PROFILE_FEATURES:
        _set(profile, name, row[name])
    record = AcademicRecord()
    for name in ACADEMIC_RECORD_FEATURES:
        _set(record, name, row[name])
    answer = StudentPrediction(
        prediction=prediction, student=Student(profile=profile, academic_record=record)
    )
    answer.predicted_at.FromDatetime(row["predicted_at"])
    if row["outcome_final_score"] is not None:
        answer.outcome_final_score = row["outcome_final_score"]
    return answer


def _set(message: StudentProfile | AcademicRecord, name: str, value: Any) -> None:
    if value is None:
        return  # not given: left unset, as it was sent
    numbers = _NUMBER_BY_CATEGORY.get(name)
    setattr(message, name, value if numbers is None else numbers[value])


def next_cursor(row: Mapping[str, Any]) -> Cursor:
    return Cursor(row["predicted_at"], row["prediction_id"])
