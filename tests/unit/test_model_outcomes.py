"""RecordOutcomes in the core, with a recording publisher: validation, duplicates, one
published outcome event per valid outcome (issue 15: no database any more)."""

from __future__ import annotations

import math
import uuid

import pytest

from inference_service.core import AcceptedOutcome, PredictionCore, PublishUnavailable
from inference_service.encoding import InvalidInput
from studentperf import envelope
from studentperf.outcomes import term_is_valid
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_service_pb2 import Outcome
from tests.unit.test_core import AgeModel, RecordingPublisher


def core(publisher: RecordingPublisher, max_batch_size: int = 10) -> PredictionCore:
    return PredictionCore(AgeModel(), publisher, max_batch_size=max_batch_size)


def published(publisher: RecordingPublisher) -> list[OutcomeEvent]:
    events = []
    for record in publisher.records:
        assert envelope.is_outcome(record.headers)
        event = envelope.decode_outcome(record.value, record.headers)
        assert record.key == event.outcome.student_id.encode()
        events.append(event)
    return events


def outcome(
    student_id: str = "s-1", term: str = "2026-spring", score: float | None = 71.5
) -> Outcome:
    message = Outcome(student_id=student_id, term=term)
    if score is not None:
        message.final_score = score
    return message


@pytest.mark.parametrize(
    ("term", "valid"),
    [
        ("2026-spring", True),
        ("2025-term-2", True),
        ("2026-q1", True),
        ("2026", False),
        ("26-spring", False),
        ("2026-Spring", False),
        ("2026-spring-", False),
        ("2026--spring", False),
        ("2026 spring", False),
        ("2026-" + "a" * 27, True),
        ("2026-" + "a" * 28, False),
    ],
)
def test_term_rule(term: str, valid: bool) -> None:
    assert term_is_valid(term) is valid


async def test_good_outcomes_are_published_and_answered_in_order() -> None:
    publisher = RecordingPublisher()
    answers = await core(publisher).record_outcomes([outcome("a"), outcome("b", score=0.0)])
    events = published(publisher)
    assert answers == [AcceptedOutcome(e.event_id) for e in events]
    assert all(uuid.UUID(e.event_id).version == 4 for e in events)
    assert [(e.outcome.student_id, e.outcome.term, e.outcome.final_score) for e in events] == [
        ("a", "2026-spring", 71.5),
        ("b", "2026-spring", 0.0),
    ]
    assert events[0].occurred_at.seconds > 0


async def test_each_bad_outcome_is_refused_alone_naming_its_fields() -> None:
    publisher = RecordingPublisher()
    answers = await core(publisher).record_outcomes(
        [
            outcome("ok"),
            outcome("bad id!", term="spring"),
            outcome("c", score=None),
            outcome("d", score=100.5),
            outcome("e", score=math.nan),
        ]
    )
    assert isinstance(answers[0], AcceptedOutcome)
    fields = [[v.field for v in a.violations] for a in answers[1:] if isinstance(a, InvalidInput)]
    assert fields == [
        ["outcomes[1].student_id", "outcomes[1].term"],
        ["outcomes[2].final_score"],
        ["outcomes[3].final_score"],
        ["outcomes[4].final_score"],
    ]
    assert [e.outcome.student_id for e in published(publisher)] == ["ok"]


async def test_the_same_student_and_term_twice_is_refused_both_times() -> None:
    publisher = RecordingPublisher()
    answers = await core(publisher).record_outcomes(
        [outcome("a"), outcome("a", term="2026-fall"), outcome("a", score=60.0)]
    )
    assert isinstance(answers[0], InvalidInput) and isinstance(answers[2], InvalidInput)
    assert "outcomes[2]" in str(answers[0]) and "outcomes[0]" in str(answers[2])
    assert isinstance(answers[1], AcceptedOutcome)
    assert [(e.outcome.term, e.outcome.final_score) for e in published(publisher)] == [
        ("2026-fall", 71.5)
    ]


async def test_all_bad_publishes_nothing_and_too_many_is_refused_whole() -> None:
    publisher = RecordingPublisher()
    [answer] = await core(publisher).record_outcomes([outcome(term="bad")])
    assert isinstance(answer, InvalidInput) and publisher.records == []
    with pytest.raises(InvalidInput, match="at most 2 outcomes per call, got 3"):
        await core(publisher, max_batch_size=2).record_outcomes([outcome()] * 3)


async def test_when_nothing_can_be_handed_off_the_call_is_unavailable() -> None:
    with pytest.raises(PublishUnavailable):
        await core(RecordingPublisher(fail=True)).record_outcomes([outcome()])
