"""A CSV row's ImportEvent: deterministic ids, what the envelope refuses, its staging row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recorder_service.rows import STAGING_COLUMNS, import_staging_row
from recorder_service.triage import Reason, triage
from studentperf import envelope
from studentperf.v1.import_event_pb2 import ImportEvent
from studentperf.v1.student_pb2 import PARENTAL_EDUCATION_SOME_HIGH_SCHOOL
from tests.unit.recorder_fakes import TOPIC, FakeRecord
from trainer.import_events import import_event, import_event_id
from trainer.kaggle import KaggleRow, student_id

SHA = "ab" * 32
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def row(line: int = 2, score: float = 71.0, parental_education: str | None = None) -> KaggleRow:
    return KaggleRow(
        line=line,
        student_id=student_id(SHA, line),
        gender="female",
        parental_education=parental_education,  # None: an empty field, not given
        lunch_program="free_or_reduced",
        test_preparation="completed",
        final_score=score,
    )


def made(line: int = 2, term: str = "2026-spring") -> ImportEvent:
    return import_event(row(line), file_sha256=SHA, term=term, occurred_at=WHEN)


def test_the_same_row_file_and_term_always_give_the_same_event_id() -> None:
    assert made().event_id == made().event_id == import_event_id(SHA, 2, "2026-spring")
    others = {made(line=3).event_id, made(term="2026-fall").event_id, made().event_id}
    assert len(others) == 3
    assert import_event_id("cd" * 32, 2, "2026-spring") not in others


def test_an_import_event_round_trips_keyed_by_its_student() -> None:
    original = made()
    record = envelope.encode_import(original)
    assert record.key == student_id(SHA, 2).encode()
    assert dict(record.headers)["content-type"] == envelope.IMPORT_CONTENT_TYPE
    decoded = envelope.decode_any(record.value, record.headers)
    assert decoded == original and isinstance(decoded, ImportEvent)
    assert decoded.profile.student_id == decoded.outcome.student_id
    assert not decoded.profile.HasField("age")
    assert decoded.profile.parental_education == 0  # not given


def broken(change: str) -> ImportEvent:
    event = made()
    if change == "other student":
        event.profile.student_id = "someone-else"
    elif change == "age":
        event.profile.age = 7
    elif change == "sha":
        event.source.file_sha256 = "AB" * 32
    elif change == "line":
        event.source.line = 0
    elif change == "score":
        event.outcome.final_score = 101
    elif change == "term":
        event.outcome.term = "spring"
    elif change == "id":
        event.event_id = "not-a-uuid"
    elif change == "no outcome":
        event.ClearField("outcome")
    return event


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("other student", "profile.student_id differs"),
        ("age", "profile.age"),
        ("sha", "SHA-256"),
        ("line", "line"),
        ("score", "final_score"),
        ("term", "term rule"),
        ("id", "not a UUID"),
        ("no outcome", "outcome missing"),
    ],
)
def test_an_import_event_that_breaks_a_rule_is_refused(change: str, error: str) -> None:
    record = envelope.encode_import(broken(change))
    with pytest.raises(envelope.UndecodableEvent, match=error):
        envelope.decode_any(record.value, record.headers)


def test_its_staging_row_holds_the_profile_the_outcome_and_the_source() -> None:
    staged = dict(zip(STAGING_COLUMNS, import_staging_row(made(), 17), strict=True))
    given = {k: v for k, v in staged.items() if v is not None}
    assert given == {
        "log_offset": 17,
        "student_id": student_id(SHA, 2),
        "gender": "female",
        "lunch_program": "free_or_reduced",
        "test_preparation": "completed",
        "predicted_at": WHEN,
        "event_schema_version": 1,
        "term": "2026-spring",
        "final_score": 71.0,
        "import_event_id": import_event_id(SHA, 2, "2026-spring"),
        "outcome_source": f"csv:{SHA}",
    }


def test_some_high_school_travels_as_its_own_number_and_is_staged_by_name() -> None:
    shs = row(parental_education="some_high_school")
    event = import_event(shs, file_sha256=SHA, term="2026-spring", occurred_at=WHEN)
    assert event.profile.parental_education == PARENTAL_EDUCATION_SOME_HIGH_SCHOOL
    record = envelope.encode_import(event)
    decoded = envelope.decode_any(record.value, record.headers)
    assert isinstance(decoded, ImportEvent)
    staged = dict(zip(STAGING_COLUMNS, import_staging_row(decoded, 3), strict=True))
    assert staged["parental_education"] == "some_high_school"


def test_triage_makes_rows_of_good_import_events_and_dead_letters_bad_ones() -> None:
    records = []
    for offset, event in enumerate([made(), broken("other student"), made(line=5)]):
        encoded = envelope.encode_import(event)
        records.append(
            FakeRecord(TOPIC, 0, offset, encoded.value, key=encoded.key, headers=encoded.headers)
        )
    out = triage(records, now=WHEN)
    assert [r[STAGING_COLUMNS.index("student_id")] for r in out.rows] == [
        student_id(SHA, 2),
        student_id(SHA, 5),
    ]
    assert [(r.record.offset, r.reason) for r in out.rejected] == [(1, Reason.INVALID_EVENT)]
