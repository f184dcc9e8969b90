"""From `Outcome` messages to rows to store, checking every rule on the way (no I/O)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from inference_service.encoding import FieldViolation, InvalidInput
from studentperf.outcomes import TERM_RULE, OutcomeRow, score_is_valid, term_is_valid
from studentperf.student_id import STUDENT_ID_RULE, student_id_is_valid
from studentperf.v1.prediction_service_pb2 import Outcome


def encode_outcome(outcome: Outcome, path: str) -> OutcomeRow:
    """Checks one outcome; raises InvalidInput naming every bad field."""
    violations: list[FieldViolation] = []
    if not student_id_is_valid(outcome.student_id):
        violations.append(FieldViolation(f"{path}.student_id", STUDENT_ID_RULE))
    if not term_is_valid(outcome.term):
        violations.append(FieldViolation(f"{path}.term", TERM_RULE))
    score = outcome.final_score if outcome.HasField("final_score") else math.nan
    if not score_is_valid(score):
        violations.append(FieldViolation(f"{path}.final_score", "required: a number from 0 to 100"))
    if violations:
        raise InvalidInput(violations)
    return OutcomeRow(outcome.student_id, outcome.term, score)


def encode_outcomes(outcomes: Sequence[Outcome]) -> list[OutcomeRow | InvalidInput]:
    """One row or one refusal per outcome, in order. A student and term given more than once
    is refused every time: which score was meant cannot be known."""
    answers: list[OutcomeRow | InvalidInput] = []
    for index, outcome in enumerate(outcomes):
        try:
            answers.append(encode_outcome(outcome, f"outcomes[{index}]"))
        except InvalidInput as refused:
            answers.append(refused)
    positions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, answer in enumerate(answers):
        if isinstance(answer, OutcomeRow):
            positions[(answer.student_id, answer.term)].append(index)
    for indexes in positions.values():
        if len(indexes) > 1:
            for index in indexes:
                # One other copy named, the rest counted: a list of them all would make n
                # copies answer n^2 characters.
                other = indexes[1] if index == indexes[0] else indexes[0]
                more = len(indexes) - 2
                others = f"outcomes[{other}]" + (f" and {more} more" if more else "")
                answers[index] = InvalidInput(
                    [
                        FieldViolation(
                            f"outcomes[{index}]",
                            f"the same student and term as {others}: send each once",
                        )
                    ]
                )
    return answers
