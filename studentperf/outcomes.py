"""Students' actual final scores (ground truth): the rules and the SQL that stores them.

The rules are shared by the inference service's RecordOutcomes (which publishes an outcome
event) and the trainer's CSV import (which publishes an import event), both written by the
recorder (recorder_service/store.py), and by the envelope's decoders. `store_outcomes` writes
outcomes directly, as of now and outside the event log: no process does any more (the tests
use it to lay out a database); one transaction, the missing students added first (the
foreign key stays intact), then every outcome upserted by (student_id, term).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from studentperf.features import SCORE_RANGE, STUDENT_ID_PATTERN
from studentperf.student_facts import ADD_STUDENTS, OUTSIDE_THE_LOG

TERM_PATTERN: Final = re.compile(r"[0-9]{4}(-[a-z0-9]+)+")
TERM_MAX_LENGTH: Final = 32
# The one rule of a term, for outcomes (required) and predictions (optional) alike; the
# migrations' CHECK constraints on outcomes.term and predictions.term say the same.
TERM_FORMAT: Final = (
    "'YYYY-name' in lower-case letters and digits, e.g. '2026-spring' or "
    f"'2025-term-2', at most {TERM_MAX_LENGTH} characters"
)
TERM_RULE: Final = f"required: {TERM_FORMAT}"
STUDENT_ID_RULE: Final = "required: 1-64 characters, each an ASCII letter, digit, '-' or '_'"
_STUDENT_ID: Final = re.compile(STUDENT_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    student_id: str
    term: str
    final_score: float


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    replaced: bool  # the student and term had a score already; this one replaced it
    student_added: bool  # the student was unknown and was added without a profile


def term_is_valid(term: str) -> bool:
    return len(term) <= TERM_MAX_LENGTH and TERM_PATTERN.fullmatch(term) is not None


def student_id_is_valid(student_id: str) -> bool:
    return _STUDENT_ID.fullmatch(student_id) is not None


def score_is_valid(score: float) -> bool:
    low, high = SCORE_RANGE
    return low <= score <= high  # also refuses NaN


# xmax is 0 on a freshly inserted row version and set on one that an update produced.
# A score written here is as of now, outside the event log (as the facts are): an outcome event
# recorded later replaces it, a late replay of an older one does not (migration 0009).
_UPSERT_OUTCOMES = f"""
INSERT INTO outcomes AS o (student_id, term, final_score, source, recorded_as_of, log_offset)
SELECT *, now(), {OUTSIDE_THE_LOG}::bigint
FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[])
ON CONFLICT (student_id, term) DO UPDATE SET
    final_score = EXCLUDED.final_score,
    source = EXCLUDED.source,
    updated_at = now(),
    recorded_as_of = EXCLUDED.recorded_as_of,
    log_offset = EXCLUDED.log_offset
RETURNING student_id, term, xmax <> 0 AS replaced
"""


async def store_outcomes(
    conn: asyncpg.Connection, rows: Sequence[OutcomeRow], *, source: str
) -> list[StoredOutcome]:
    """Stores valid, distinct-keyed rows in one transaction; one result per row, in order."""
    if not rows:
        return []
    if len({(r.student_id, r.term) for r in rows}) != len(rows):
        raise ValueError("one statement cannot write a student and term twice")
    async with conn.transaction():
        added = {
            r["student_id"] for r in await conn.fetch(ADD_STUDENTS, [r.student_id for r in rows])
        }
        written = await conn.fetch(
            _UPSERT_OUTCOMES,
            [r.student_id for r in rows],
            [r.term for r in rows],
            [r.final_score for r in rows],
            [source] * len(rows),
        )
    replaced = {(r["student_id"], r["term"]): bool(r["replaced"]) for r in written}
    return [StoredOutcome(replaced[(r.student_id, r.term)], r.student_id in added) for r in rows]
