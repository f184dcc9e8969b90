import uuid

import pytest

from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Prediction
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
