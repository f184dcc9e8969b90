"""What a dead letter becomes when the topic cannot take it whole, and how refusals read."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from recorder_service import dead_letters as dead_letters_module
from recorder_service.dead_letters import OMITTED_HEADER, dead_letter
from recorder_service.store import describe, refusal_reason
from recorder_service.triage import Reason, Rejected
from tests.unit.recorder_fakes import TOPIC, FakeRecord


def letter_of(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]):  # type: ignore[no-untyped-def]
    record = FakeRecord(TOPIC, 1, 9, value, key=key, headers=headers)
    return dead_letter(Rejected(record, Reason.UNDECODABLE, "e"), datetime(2026, 1, 1, tzinfo=UTC))


def test_a_letter_too_large_loses_its_value_then_everything_but_where_and_why() -> None:
    letter = letter_of(b"k", b"v" * 10, [("trace-id", None), ("x", b"y" * 10)])
    assert ("trace-id", None) in letter.headers  # a null header value is kept as null
    first = letter.smaller()
    assert first is not None
    assert (first.key, first.value) == (b"k", b"")  # never key and value both null
    assert dict(first.headers)[OMITTED_HEADER] == b"value"
    assert ("x", b"y" * 10) in first.headers
    second = first.smaller()
    assert second is not None and (second.key, second.value) == (None, b"")
    assert {name for name, _ in second.headers} >= {
        "dead-letter-reason",
        "dead-letter-source-offset",
        OMITTED_HEADER,
    }
    assert all(name.startswith("dead-letter-") for name, _ in second.headers)
    assert dict(second.headers)[OMITTED_HEADER] == b"key, value and original headers"
    assert second.smaller() is None


def test_a_letter_s_size_counts_its_key_value_and_every_header() -> None:
    """What is compared with the size the topic refused (dead_letters.KafkaDeadLetters): a
    letter counted smaller than it is would be sent whole again, and refused again."""
    letter = letter_of(b"key", b"v" * 10, [("trace-id", None), ("x", b"y" * 7)])
    headers = sum(len(name) + len(value or b"") for name, value in letter.headers)
    assert headers > len("trace-id") + len("x") + 7  # its dead-letter-* headers too
    assert letter.size == 3 + 10 + headers


def test_a_letter_without_a_value_goes_straight_to_the_smallest_form() -> None:
    letter = letter_of(None, None, [("h", b"x" * 100)])
    smaller = letter.smaller()
    assert smaller is not None and all(n.startswith("dead-letter-") for n, _ in smaller.headers)


def check_violation() -> asyncpg.CheckViolationError:
    error = asyncpg.CheckViolationError(
        'new row for relation "students" violates check constraint "students_age_check"'
    )
    error.sqlstate = "23514"
    error.detail = "Failing row contains (Jane-Roe, 5)."
    error.constraint_name = "students_age_check"
    error.table_name = "students"
    return error


def test_a_refusal_names_the_constraint_never_the_row() -> None:
    text = describe(check_violation())
    assert (
        text == "CheckViolationError, sqlstate 23514, constraint students_age_check, table students"
    )
    assert refusal_reason(check_violation()) is Reason.CONSTRAINT_VIOLATION


def test_what_the_driver_cannot_encode_is_invalid_data_and_not_quoted() -> None:
    error = ValueError("invalid UUID 'Jane-Roe': length must be between 32..36 characters")
    assert refusal_reason(error) is Reason.INVALID_DATA
    assert refusal_reason(OverflowError("value out of int16 range")) is Reason.INVALID_DATA
    assert describe(error) == "ValueError"
    assert refusal_reason(RuntimeError("x")) is Reason.UNEXPECTED_ERROR


async def test_a_broker_with_no_controller_yet_does_not_stop_the_recorder(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka's create_topics fails with an AttributeError while the metadata names no
    controller (a broker just started, met in CI): logged, as a refusal is, not raised."""

    class NoController:
        closed = False

        def __init__(self, **options: object) -> None:
            pass

        async def start(self) -> None:
            pass

        async def describe_cluster(self) -> dict[str, list[object]]:
            return {"brokers": [1]}

        async def create_topics(self, topics: list[object]) -> None:
            raise AttributeError("'NoneType' object has no attribute 'nodeId'")

        async def close(self) -> None:
            NoController.closed = True

    monkeypatch.setattr(dead_letters_module, "AIOKafkaAdminClient", NoController)
    await dead_letters_module.ensure_topic("127.0.0.1:9", "t.dead-letter", 3)
    assert "no Kafka controller known yet" in caplog.text
    assert NoController.closed
