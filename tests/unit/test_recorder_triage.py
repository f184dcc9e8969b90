"""Which records become rows and which go to the dead-letter topic, with what headers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from recorder_service import triage as triage_module
from recorder_service.batching import UnreadableRecord
from recorder_service.dead_letters import dead_letter
from recorder_service.rows import STAGING_COLUMNS, staging_row
from recorder_service.triage import Reason, triage, triage_in_steps
from studentperf import envelope
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.unit.recorder_fakes import TOPIC, FakeRecord, event_bytes


def record(offset: int, value: bytes | None, **kwargs: object) -> FakeRecord:
    return FakeRecord(TOPIC, 3, offset, value, **kwargs)  # type: ignore[arg-type]


def far_future() -> bytes:
    event = PredictionEvent.FromString(event_bytes())
    event.occurred_at.seconds = 10**13
    return event.SerializeToString()


def test_each_kind_of_poison_gets_its_reason_and_the_events_their_rows() -> None:
    records = [
        record(0, event_bytes("a")),
        record(1, b"\x00not protobuf"),
        record(2, None),
        record(3, PredictionEvent(schema_version=99).SerializeToString()),
        record(4, event_bytes("b"), headers=[("schema-version", b"2")]),
        record(5, far_future()),
        record(6, event_bytes("c")),
    ]
    out = triage(records)
    assert [r.offset for r in out.sources] == [0, 6]
    assert [row[0] for row in out.rows] == [0, 6]  # the records' offsets
    assert [(r.record.offset, r.reason) for r in out.rejected] == [
        (1, Reason.UNDECODABLE),
        (2, Reason.UNDECODABLE),
        (3, Reason.UNKNOWN_SCHEMA_VERSION),
        (4, Reason.UNKNOWN_SCHEMA_VERSION),
        (5, Reason.INVALID_EVENT),
    ]


def test_a_record_the_kafka_client_cannot_read_is_undecodable_and_the_rest_read_on() -> None:
    """The poller hands on what aiokafka cannot read (polling.py) among the batch's events: it
    is dead-lettered with the poller's own error, and the events after it are still rows."""
    error = "a header name is not UTF-8"
    unreadable = UnreadableRecord(TOPIC, 3, 1, error, 1_700_000_000_000, b"s-2", b"\x00raw")
    out = triage([record(0, event_bytes("a")), unreadable, record(2, event_bytes("c"))])
    assert [r.offset for r in out.sources] == [0, 2]
    assert [(r.record, r.reason, r.error) for r in out.rejected] == [
        (unreadable, Reason.UNDECODABLE, error)
    ]


def test_an_error_nobody_foresaw_rejects_its_record_alone_and_quotes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever one record makes triage raise is that record's `unexpected-error`, named by the
    exception's class only (its text may quote the student); the others are read on."""

    def fails_for_b(event: PredictionEvent, *args: object) -> tuple[object, ...]:
        if event.input.profile.student_id == "b":
            raise RuntimeError("cannot read the record of student b")
        return staging_row(event, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(triage_module, "staging_row", fails_for_b)
    out = triage([record(i, event_bytes(sid)) for i, sid in enumerate("abc")])
    assert [r.offset for r in out.sources] == [0, 2]
    assert [(r.record.offset, r.reason, r.error) for r in out.rejected] == [
        (1, Reason.UNEXPECTED_ERROR, "RuntimeError while reading the record")
    ]


def test_a_dead_letter_is_the_original_record_with_where_and_why() -> None:
    original = record(41, b"\x00bad", key=b"s-9", timestamp=1234, headers=[("trace-id", b"t1")])
    (rejected,) = triage([original]).rejected
    seen = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    letter = dead_letter(rejected, seen)
    assert (letter.key, letter.value) == (b"s-9", b"\x00bad")
    headers = dict(letter.headers)
    assert headers["trace-id"] == b"t1"
    assert headers[envelope.DEAD_LETTER_REASON_HEADER] == b"undecodable"
    assert b"not a PredictionEvent" in (headers[envelope.DEAD_LETTER_ERROR_HEADER] or b"")
    assert headers[envelope.DEAD_LETTER_SOURCE_TOPIC_HEADER] == TOPIC.encode()
    assert headers[envelope.DEAD_LETTER_SOURCE_PARTITION_HEADER] == b"3"
    assert headers[envelope.DEAD_LETTER_SOURCE_OFFSET_HEADER] == b"41"
    assert headers[envelope.DEAD_LETTER_SOURCE_TIMESTAMP_HEADER] == b"1234"
    assert headers[envelope.DEAD_LETTER_FIRST_SEEN_HEADER] == b"2026-01-02T03:04:05+00:00"
    assert headers[envelope.DEAD_LETTER_ATTEMPTS_HEADER] == b"1"


def test_a_replayed_dead_letter_does_not_carry_its_old_reasons() -> None:
    old = [("dead-letter-reason", b"undecodable"), ("content-type", b"x")]
    headers = envelope.dead_letter_headers(
        old,
        reason="constraint-violation",
        error="e" * 5000,
        topic="t",
        partition=0,
        offset=1,
        timestamp_ms=2,
        first_seen_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempts=3,
    )
    names = [name for name, _ in headers]
    assert names.count("dead-letter-reason") == 1 and "content-type" in names
    assert len(dict(headers)["dead-letter-error"] or b"") == 2048


def test_a_header_without_a_value_does_not_stop_triage() -> None:
    # Kafka allows a null header value; any producer can write one.
    out = triage(
        [
            record(0, event_bytes("a"), headers=[("trace-id", None)]),
            record(1, event_bytes("b"), headers=[("schema-version", None)]),
            record(2, event_bytes("c"), headers=[("content-type", None), ("trace-id", b"x")]),
        ]
    )
    assert [r.offset for r in out.sources] == [0, 2]
    assert [row[-1] for row in out.rows] == [None, None]  # no trace id, the event all the same
    assert [(r.record.offset, r.reason) for r in out.rejected] == [
        (1, Reason.UNKNOWN_SCHEMA_VERSION)
    ]


def outcome_record(offset: int, student_id: str, term: str, score: float | None) -> FakeRecord:
    event = OutcomeEvent(schema_version=1, event_id=str(uuid.uuid4()))
    event.occurred_at.seconds = 1_780_000_000
    event.outcome.student_id, event.outcome.term = student_id, term
    if score is not None:
        event.outcome.final_score = score
    encoded = envelope.encode_outcome(event)
    return record(offset, encoded.value, key=encoded.key, headers=encoded.headers)


def test_the_content_type_routes_outcomes_and_old_records_stay_predictions() -> None:
    """An outcome event becomes an outcome row (no prediction_id, the score set); a record with
    no content-type header, as every event before issue 15, is still a prediction."""
    records = [
        outcome_record(0, "o-1", "2026-spring", 64.5),
        record(1, event_bytes("p-1")),  # no headers at all
        outcome_record(2, "o-2", "2026-spring", None),
        outcome_record(3, "o-3", "spring", 50.0),
        # An outcome event labelled as a prediction is read as one, and refused as not one.
        record(4, outcome_record(9, "o-4", "2026-fall", 1.0).value),
    ]
    out = triage(records)
    columns = [dict(zip(STAGING_COLUMNS, row, strict=True)) for row in out.rows]
    assert [(c["log_offset"], c["prediction_id"] is None) for c in columns] == [
        (0, True),
        (1, False),
    ]
    assert (columns[0]["student_id"], columns[0]["term"], columns[0]["final_score"]) == (
        "o-1",
        "2026-spring",
        64.5,
    )
    assert columns[1]["final_score"] is None
    assert [(r.record.offset, r.reason) for r in out.rejected] == [
        (2, Reason.INVALID_EVENT),
        (3, Reason.INVALID_EVENT),
        (4, Reason.UNDECODABLE),
    ]
    assert "final_score" in out.rejected[0].error and "o-2" not in out.rejected[0].error
    assert "term" in out.rejected[1].error and "spring" not in out.rejected[1].error.split()


async def test_a_batch_is_triaged_in_steps_that_let_the_writers_run() -> None:
    """Between steps the loop runs other tasks (the writers' next statements); the result is
    the one triage() gives for the whole batch at once."""
    records = [record(i, event_bytes(f"s{i % 7}")) for i in range(1000)]
    records[500] = record(500, b"\x00not protobuf")
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    try:
        stepped = await triage_in_steps(records, max_future_skew=timedelta(minutes=5), step=100)
        seen = turns
    finally:
        counter.cancel()
    assert seen >= 9, f"the loop ran other tasks {seen} times while 10 steps were triaged"
    whole = triage(records, max_future_skew=timedelta(minutes=5))
    assert stepped.rows == whole.rows
    assert [r.offset for r in stepped.sources] == [r.offset for r in whole.sources]
    assert [r.record.offset for r in stepped.rejected] == [500]
