"""RecordOutcomes in the core, with a fake store: validation, duplicates, no database."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from inference_service.core import OutcomesUnavailable, PredictionCore
from inference_service.encoding import InvalidInput
from studentperf.outcomes import OutcomeRow, StoredOutcome, term_is_valid
from studentperf.v1.prediction_service_pb2 import Outcome
from tests.unit.test_core import AgeModel, RecordingPublisher


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], float] = {}
        self.calls: list[list[OutcomeRow]] = []

    async def store(self, rows: Sequence[OutcomeRow]) -> list[StoredOutcome]:
        self.calls.append(list(rows))
        known = {student for student, _ in self.rows}
        answers = []
        for row in rows:
            key = (row.student_id, row.term)
            answers.append(StoredOutcome(key in self.rows, row.student_id not in known))
            self.rows[key] = row.final_score
        return answers


def core(store: FakeStore | None, max_batch_size: int = 10) -> PredictionCore:
    return PredictionCore(
        AgeModel(), RecordingPublisher(), max_batch_size=max_batch_size, outcomes=store
    )


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


async def test_good_outcomes_are_stored_and_answered_in_order() -> None:
    store = FakeStore()
    answers = await core(store).record_outcomes([outcome("a"), outcome("b", score=0.0)])
    assert answers == [StoredOutcome(False, True), StoredOutcome(False, True)]
    assert store.rows == {("a", "2026-spring"): 71.5, ("b", "2026-spring"): 0.0}
    again = await core(store).record_outcomes([outcome("a", score=80.0)])
    assert again == [StoredOutcome(replaced=True, student_added=False)]
    assert store.rows[("a", "2026-spring")] == 80.0


async def test_each_bad_outcome_is_refused_alone_naming_its_fields() -> None:
    store = FakeStore()
    answers = await core(store).record_outcomes(
        [
            outcome("ok"),
            outcome("bad id!", term="spring"),
            outcome("c", score=None),
            outcome("d", score=100.5),
            outcome("e", score=math.nan),
        ]
    )
    assert answers[0] == StoredOutcome(False, True)
    fields = [[v.field for v in a.violations] for a in answers[1:] if isinstance(a, InvalidInput)]
    assert fields == [
        ["outcomes[1].student_id", "outcomes[1].term"],
        ["outcomes[2].final_score"],
        ["outcomes[3].final_score"],
        ["outcomes[4].final_score"],
    ]
    assert [r.student_id for r in store.calls[0]] == ["ok"]


async def test_the_same_student_and_term_twice_is_refused_both_times() -> None:
    store = FakeStore()
    answers = await core(store).record_outcomes(
        [outcome("a"), outcome("a", term="2026-fall"), outcome("a", score=60.0)]
    )
    assert isinstance(answers[0], InvalidInput) and isinstance(answers[2], InvalidInput)
    assert "outcomes[2]" in str(answers[0]) and "outcomes[0]" in str(answers[2])
    assert answers[1] == StoredOutcome(False, True)
    assert store.rows == {("a", "2026-fall"): 71.5}


async def test_all_bad_touches_no_store_and_too_many_is_refused_whole() -> None:
    store = FakeStore()
    [answer] = await core(store).record_outcomes([outcome(term="bad")])
    assert isinstance(answer, InvalidInput) and store.calls == []
    with pytest.raises(InvalidInput, match="at most 2 outcomes per call, got 3"):
        await core(store, max_batch_size=2).record_outcomes([outcome()] * 3)


async def test_without_a_store_the_call_is_unavailable() -> None:
    with pytest.raises(OutcomesUnavailable):
        await core(None).record_outcomes([outcome()])
