import uuid

import pytest

from studentperf import envelope
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Outcome, Prediction
from studentperf.v1.student_pb2 import Student, StudentProfile


def event(**overrides: object) -> PredictionEvent:
    pid = str(uuid.uuid4())
    made = PredictionEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=pid,
        input=Student(profile=StudentProfile(student_id="stu-7")),
        prediction=Prediction(prediction_id=pid, model_version="v1"),
    )
    for name, value in overrides.items():
        setattr(made, name, value)
    return made


def test_round_trip_keys_by_student_and_labels_the_schema() -> None:
    original = event()
    record = envelope.encode(original)
    assert record.key == b"stu-7"
    assert dict(record.headers)["schema-version"] == b"1"
    assert envelope.decode(record.value) == original


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"\xff\xff\xff", "not a PredictionEvent"),
        (event(schema_version=2).SerializeToString(), "unknown schema_version 2"),
        (event(event_id="other").SerializeToString(), "differs"),
    ],
)
def test_refuses_what_a_recorder_must_not_write(value: bytes | None, reason: str) -> None:
    with pytest.raises(envelope.UndecodableEvent, match=reason):
        envelope.decode(value)


def test_refuses_non_uuid_ids() -> None:
    bad = event()
    bad.event_id = bad.prediction.prediction_id = "not-a-uuid"
    with pytest.raises(envelope.UndecodableEvent, match="not a UUID"):
        envelope.decode(bad.SerializeToString())


def test_a_forged_event_id_is_refused_without_being_quoted() -> None:
    bad = event()
    bad.event_id = bad.prediction.prediction_id = "Jane Roe, 2011-04-02"
    with pytest.raises(envelope.UndecodableEvent) as refused:
        envelope.decode(bad.SerializeToString())
    assert "Jane" not in str(refused.value)


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        (None, "without a value"),
        (b"2", "2"),
        (b"\xff" * 10_000, "not a version number"),
        (b"v\xff", "not a version number"),  # short, yet neither a number nor UTF-8
    ],
)
def test_every_schema_version_header_is_checked_and_shown_safely(
    header: bytes | None, shown: str
) -> None:
    headers = [("schema-version", b"1"), ("schema-version", header)]
    with pytest.raises(envelope.UnknownSchemaVersion, match=shown) as refused:
        envelope.decode(event().SerializeToString(), headers)
    assert len(str(refused.value)) < 100


@pytest.mark.parametrize(
    "value", [None, b"", b"\xff" * 32, b"A" * 32, b"0" * 32, b"4bf92f3577b34da6" * 10**4]
)
def test_a_trace_id_header_that_is_null_or_not_a_trace_id_is_no_trace_id(
    value: bytes | None,
) -> None:
    assert envelope.trace_id([("trace-id", value)]) is None


def test_the_first_trace_id_header_is_the_one() -> None:
    first, second = b"4bf92f3577b34da6a3ce929d0e0e4736", b"00f067aa0ba902b700f067aa0ba902b7"
    assert envelope.trace_id([("trace-id", first), ("trace-id", second)]) == first.decode()


def outcome_event(score: float | None = 71.5, term: str = "2026-spring") -> OutcomeEvent:
    made = OutcomeEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=str(uuid.uuid4()),
        outcome=Outcome(student_id="stu-8", term=term),
    )
    if score is not None:
        made.outcome.final_score = score
    return made


def test_an_outcome_event_round_trips_under_its_own_content_type() -> None:
    original = outcome_event()
    record = envelope.encode_outcome(original, trace_id="a" * 32)
    assert record.key == b"stu-8"
    headers = dict(record.headers)
    assert headers["content-type"] == envelope.OUTCOME_CONTENT_TYPE
    assert headers["schema-version"] == b"1"
    assert envelope.decode_any(record.value, record.headers) == original
    # A prediction's record, with its header or with none (as before issue 15), is a prediction.
    prediction = envelope.encode(event())
    assert isinstance(envelope.decode_any(prediction.value, prediction.headers), PredictionEvent)
    assert isinstance(envelope.decode_any(prediction.value), PredictionEvent)


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        (outcome_event(score=None), "final_score"),
        (outcome_event(score=100.5), "final_score"),
        (outcome_event(term="spring"), "term"),
        (OutcomeEvent(schema_version=1, event_id=str(uuid.uuid4())), "outcome missing"),
        (OutcomeEvent(schema_version=1, event_id="x", outcome=Outcome()), "not a UUID"),
    ],
)
def test_an_outcome_that_breaks_a_rule_is_refused(made: OutcomeEvent, reason: str) -> None:
    headers = envelope.encode_outcome(made).headers
    with pytest.raises(envelope.UndecodableEvent, match=reason):
        envelope.decode_any(made.SerializeToString(), headers)
