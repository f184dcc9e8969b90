"""Property-based: whatever bytes a record holds, triage answers for it and goes on.

Any key, value, headers (null values, repeated, binary, huge) and timestamp, and any event that
parses with absurd fields: triage never raises, every record is a row or rejected with a known
reason, its dead letter can be built, and no `dead-letter-*` header quotes the student.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recorder_service.dead_letters import dead_letter
from recorder_service.triage import Reason, triage
from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.unit.recorder_fakes import TOPIC, FakeRecord

# Put in every forged string field: a dead-letter header that holds it quotes student data.
SECRET = "Zq7secret"
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
any_float = st.floats(allow_nan=True, allow_infinity=True)
mostly = st.integers(0, 4).map(bool)  # true four times in five
forged_text = st.builds(lambda t: SECRET + t, st.text(max_size=30))
header_names = st.one_of(
    st.sampled_from(["schema-version", "trace-id", "content-type", "dead-letter-reason"]),
    st.text(max_size=20),
)
header_values = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.sampled_from([b"1", b"2", b"", b"0" * 32, b"4bf92f3577b34da6a3ce929d0e0e4736"]),
    st.just(b"\xff" * 70_000),
)


@st.composite
def forged_events(draw: st.DrawFn) -> bytes:
    """An event that parses, with any field values, some of them absurd."""
    pid = str(uuid.uuid4()) if draw(mostly) else draw(forged_text)
    event = PredictionEvent(
        schema_version=envelope.SCHEMA_VERSION if draw(mostly) else draw(st.integers(0, 2**32 - 1)),
        event_id=pid if draw(mostly) else draw(forged_text),
    )
    profile = event.input.profile
    profile.student_id = draw(forged_text)
    if draw(st.booleans()):
        profile.age = draw(int32)
    # Enum fields take any number on the wire; unknown ones must be refused, not crash.
    profile.gender = draw(st.one_of(st.integers(0, 4), int32))  # type: ignore[assignment]
    profile.lunch_program = draw(st.one_of(st.integers(0, 3), int32))  # type: ignore[assignment]
    record = event.input.academic_record
    for name in ("attendance_percentage", "study_hours_per_week", "previous_gpa"):
        if draw(st.booleans()):
            setattr(record, name, draw(any_float))
    if draw(mostly):
        p = event.prediction
        p.prediction_id = pid
        p.model_version = draw(forged_text)
        p.predicted_final_score = draw(any_float)
        p.pass_probability = draw(any_float)
        p.pass_mark = draw(any_float)
        p.imputed_fields.extend(draw(st.lists(forged_text, max_size=3)))
    event.occurred_at.seconds = draw(st.integers(0, 2_000_000_000)) if draw(mostly) else draw(int64)
    event.occurred_at.nanos = 0 if draw(mostly) else draw(int32)
    return event.SerializeToString()


records = st.builds(
    lambda offset, key, value, headers, timestamp: FakeRecord(
        TOPIC, 0, offset, value, key=key, timestamp=timestamp, headers=headers
    ),
    offset=st.integers(0, 2**62),
    key=st.one_of(st.none(), st.binary(max_size=80)),
    value=st.one_of(st.none(), st.binary(max_size=200), forged_events(), forged_events()),
    headers=st.lists(st.tuples(header_names, header_values), max_size=4),
    timestamp=st.one_of(st.just(-1), int64),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records, min_size=1, max_size=8))
def test_every_record_is_a_row_or_a_dead_letter_with_a_known_reason(
    batch: list[FakeRecord],
) -> None:
    out = triage(batch)
    event(f"rows: {min(len(out.rows), 2)}")  # the statistics show both kinds are exercised
    assert len(out.rows) + len(out.rejected) == len(batch)
    assert len(out.sources) == len(out.rows)
    rejected = {id(r.record) for r in out.rejected}
    assert rejected.isdisjoint(id(r) for r in out.sources)
    for r in out.rejected:
        assert r.reason in Reason
        event(f"reason: {r.reason.value}")
        assert SECRET not in r.error
        letter = dead_letter(r, datetime(2026, 1, 1, tzinfo=UTC))
        for name, value in letter.headers:
            assert isinstance(name, str) and (value is None or isinstance(value, bytes))
            if name.startswith("dead-letter-") and value is not None:
                assert SECRET.encode() not in value, name
        assert dict(letter.headers)[envelope.DEAD_LETTER_REASON_HEADER] == r.reason.value.encode()
