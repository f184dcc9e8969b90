"""The rule of an erasure's reason, shared by EraseStudent (which refuses a bad one) and the
recorder (which refuses an erasure event carrying one); and the keys of what an erasure
removed that name no table.

A reason is a reference (a ticket number, "parent request 2026-113"), kept in the audit row,
which outlives the student's data: the rule keeps it short and without the characters of an
e-mail address or of free prose, though it cannot keep a name out; the README says not to
put one there.
"""

from __future__ import annotations

import re
from typing import Final

REASON_MAX_LENGTH: Final = 200
REASON_RULE: Final = (
    f"optional: at most {REASON_MAX_LENGTH} characters, each an ASCII letter, digit, space or "
    "one of - _ . : # /"
)
_REASON: Final = re.compile(r"[A-Za-z0-9 _.:#/-]*")
# Who asked, when the server requires no token.
ANONYMOUS: Final = "anonymous"
REQUESTED_BY_MAX_LENGTH: Final = 128
# In an erasure's `removed` (rows per table), two entries that name no table. FACTS_CLEARED:
# 1 when it cleared the student's facts given before it from a students row a later enrolment
# keeps. EVENTS_SKIPPED: how many of the student's events at or before it came in the same write
# as the erasure and were skipped, never stored (an erasure made just after a prediction finds
# them not yet recorded): without it the audit would say the student had nothing.
FACTS_CLEARED: Final = "student_facts"
EVENTS_SKIPPED: Final = "events_skipped"


def reason_is_valid(reason: str) -> bool:
    return len(reason) <= REASON_MAX_LENGTH and _REASON.fullmatch(reason) is not None


def requested_by_is_valid(name: str) -> bool:
    """A client's name from the token table (one word), or ANONYMOUS."""
    return 0 < len(name) <= REQUESTED_BY_MAX_LENGTH and name.isprintable() and " " not in name
