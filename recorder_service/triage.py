"""Sorting a batch's records into rows to write and records that can never be written.

A record that is not a readable event, is of a schema version this recorder does not read, or
cannot be turned into a row is rejected here, with the reason, and goes to the dead-letter
topic; the database may still refuse a row later (store.py), which rejects it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from recorder_service.batching import Record
from recorder_service.rows import StagingRow, occurred_at, staging_row
from recorder_service.settings import DEFAULT_MAX_FUTURE_SKEW_S
from studentperf import envelope


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (its `dead-letter-reason` header)."""

    UNDECODABLE = "undecodable"
    UNKNOWN_SCHEMA_VERSION = "unknown-schema-version"
    INVALID_EVENT = "invalid-event"
    CONSTRAINT_VIOLATION = "constraint-violation"
    # Stamped further ahead of the recorder's clock than the allowed skew: stored, it would
    # outrank every real event about the student until that time came.
    FUTURE_EVENT = "future-event"


@dataclass(frozen=True, slots=True)
class Rejected:
    record: Record
    reason: Reason
    error: str
    attempts: int = 1


@dataclass(slots=True)
class Triaged:
    rows: list[StagingRow] = field(default_factory=list)
    sources: list[Record] = field(default_factory=list)  # the record of each row, in order
    rejected: list[Rejected] = field(default_factory=list)


def triage(
    records: Iterable[Record],
    *,
    max_future_skew: timedelta = timedelta(seconds=DEFAULT_MAX_FUTURE_SKEW_S),
    now: datetime | None = None,
) -> Triaged:
    """Rows for the records that are events (in the given order), and the rest, rejected.

    An event whose occurred_at is more than `max_future_skew` after `now` (default: this
    recorder's clock) is rejected as a future event."""
    out = Triaged()
    latest = (now or datetime.now(UTC)) + max_future_skew
    for record in records:
        try:
            event = envelope.decode(record.value, record.headers)
            row = staging_row(event, record.offset, envelope.trace_id(record.headers))
        except envelope.UnknownSchemaVersion as error:
            out.rejected.append(Rejected(record, Reason.UNKNOWN_SCHEMA_VERSION, str(error)))
        except envelope.UndecodableEvent as error:
            out.rejected.append(Rejected(record, Reason.UNDECODABLE, str(error)))
        except (ValueError, OverflowError) as error:
            out.rejected.append(Rejected(record, Reason.INVALID_EVENT, f"not storable: {error}"))
        else:
            when = occurred_at(event)  # a date: staging_row read it already
            if when > latest:
                ahead = (
                    f"occurred_at is {(when - latest + max_future_skew).total_seconds():.0f} s"
                    " ahead of the recorder's clock, more than the"
                    f" {max_future_skew.total_seconds():.0f} s allowed"
                    " (STUDENTPERF_MAX_FUTURE_SKEW_S)"
                )
                out.rejected.append(Rejected(record, Reason.FUTURE_EVENT, ahead))
                continue
            out.rows.append(row)
            out.sources.append(record)
    return out
