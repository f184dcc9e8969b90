"""A student's recorded predictions, newest first, a page at a time: what a page asks for.

Pages are keyset pages: a page starts strictly after the last (predicted_at, prediction_id) of
the one before, so a prediction recorded meanwhile neither shifts nor repeats the pages that
follow. studentperf.persistence.history reads them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last prediction of a page: the next page starts strictly after it (older)."""

    predicted_at: datetime
    prediction_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PageQuery:
    student_id: str
    limit: int
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    after: Cursor | None = None
