"""Students' actual final scores (ground truth): the rules of a term and a score.

The rules are shared by the inference service's RecordOutcomes (which publishes an outcome
event) and the trainer's CSV import (which publishes an import event), both written by the
recorder by the rule of studentperf.persistence.outcomes, and by the envelope's decoders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from studentperf.features import SCORE_RANGE

TERM_PATTERN: Final = re.compile(r"[0-9]{4}(-[a-z0-9]+)+")
TERM_MAX_LENGTH: Final = 32
# The one rule of a term, for outcomes (required) and predictions (optional) alike; the
# migrations' CHECK constraints on outcomes.term and predictions.term say the same.
TERM_FORMAT: Final = (
    "'YYYY-name' in lower-case letters and digits, e.g. '2026-spring' or "
    f"'2025-term-2', at most {TERM_MAX_LENGTH} characters"
)
TERM_RULE: Final = f"required: {TERM_FORMAT}"


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    student_id: str
    term: str
    final_score: float


def term_is_valid(term: str) -> bool:
    return len(term) <= TERM_MAX_LENGTH and TERM_PATTERN.fullmatch(term) is not None


def score_is_valid(score: float) -> bool:
    low, high = SCORE_RANGE
    return low <= score <= high  # also refuses NaN
