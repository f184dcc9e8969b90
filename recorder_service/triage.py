"""Sorting a batch's records into rows to write and records that can never be written.

A record that is not a readable event, is of a schema version this recorder does not read, or
cannot be turned into a row is rejected here, with the reason, and goes to the dead-letter
topic; the database may still refuse a row later (store.py), which rejects it the same way.

Whatever a record holds, triage does not raise: an error nobody foresaw while reading one
record is that record's problem (`unexpected-error`), never a reason to stop recording. Error
texts name the rule a record broke and never quote its values, which can be a student's data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from recorder_service.batching import Record, UnreadableRecord
from recorder_service.erasure import Erasure
from recorder_service.rows import (
    StagingRow,
    import_staging_row,
    occurred_at,
    outcome_staging_row,
    staging_row,
)
from recorder_service.settings import DEFAULT_MAX_FUTURE_SKEW_S
from studentperf import envelope
from studentperf.v1.erasure_event_pb2 import ErasureEvent
from studentperf.v1.import_event_pb2 import ImportEvent
from studentperf.v1.outcome_event_pb2 import OutcomeEvent


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (its `dead-letter-reason` header)."""

    UNDECODABLE = "undecodable"
    UNKNOWN_SCHEMA_VERSION = "unknown-schema-version"
    INVALID_EVENT = "invalid-event"
    # Refused by the database (store.py): a constraint (SQLSTATE class 23), or a value the
    # column cannot hold (class 22, or the driver could not encode it).
    CONSTRAINT_VIOLATION = "constraint-violation"
    INVALID_DATA = "invalid-data"
    # Stamped further ahead of the recorder's clock than the allowed skew: stored, it would
    # outrank every real event about the student until that time came.
    FUTURE_EVENT = "future-event"
    # Anything else that one record alone caused; the error names the exception's class only.
    UNEXPECTED_ERROR = "unexpected-error"


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
    # Erasure events, in log order: applied before the rows are written (store.py).
    erasures: list[Erasure] = field(default_factory=list)

    def extend(self, later: Triaged) -> None:
        """Adds the triage of the records that follow these."""
        self.rows += later.rows
        self.sources += later.sources
        self.rejected += later.rejected
        self.erasures += later.erasures


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
        if isinstance(record, UnreadableRecord):
            out.rejected.append(Rejected(record, Reason.UNDECODABLE, record.error))
            continue
        try:
            row = _row(record, latest, max_future_skew)
        except _Refused as refused:
            out.rejected.append(Rejected(record, refused.reason, refused.error))
        except Exception as error:  # one record's problem, not the recorder's
            error_text = f"{type(error).__name__} while reading the record"
            out.rejected.append(Rejected(record, Reason.UNEXPECTED_ERROR, error_text))
        else:
            if isinstance(row, Erasure):
                out.erasures.append(row)
                continue
            out.rows.append(row)
            out.sources.append(record)
    return out


# Records triaged between two turns of the event loop (see `triage_in_steps`).
STEP = 250


async def triage_in_steps(
    records: Sequence[Record], *, max_future_skew: timedelta, step: int = STEP
) -> Triaged:
    """`triage`, giving the event loop a turn every `step` records. A batch of thousands takes
    tens of milliseconds to decode, and the database connections of the batches being written
    meanwhile would wait all that time for their next statement: one recorder stored about 10%
    more events per second in steps than in one go (docs/recorder.md)."""
    out = Triaged()
    for start in range(0, len(records), step):
        out.extend(triage(records[start : start + step], max_future_skew=max_future_skew))
        await asyncio.sleep(0)
    return out


class _Refused(Exception):
    def __init__(self, reason: Reason, error: str) -> None:
        self.reason = reason
        self.error = error


def _row(record: Record, latest: datetime, max_future_skew: timedelta) -> StagingRow | Erasure:
    headers = record.headers or ()
    try:
        # The content type says which event it is (studentperf.envelope): no guessing.
        event = envelope.decode_any(record.value, headers)
    except envelope.UnknownSchemaVersion as error:
        raise _Refused(Reason.UNKNOWN_SCHEMA_VERSION, str(error)) from None
    except (envelope.InvalidOutcome, envelope.InvalidErasure) as error:
        raise _Refused(Reason.INVALID_EVENT, str(error)) from None
    except envelope.UndecodableEvent as error:
        raise _Refused(Reason.UNDECODABLE, str(error)) from None
    try:
        when = occurred_at(event)
    except (ValueError, OverflowError):
        raise _Refused(
            Reason.INVALID_EVENT, "not storable: occurred_at is not a date between years 1-9999"
        ) from None
    if when > latest:
        ahead = (
            f"occurred_at is {(when - latest + max_future_skew).total_seconds():.0f} s"
            " ahead of the recorder's clock, more than the"
            f" {max_future_skew.total_seconds():.0f} s allowed (STUDENTPERF_MAX_FUTURE_SKEW_S)"
        )
        raise _Refused(Reason.FUTURE_EVENT, ahead)
    if isinstance(event, ErasureEvent):
        return Erasure(
            envelope.canonical_uuid(event.event_id),
            event.student_id,
            when,
            event.requested_by,
            event.reason,
        )
    if isinstance(event, ImportEvent):
        return import_staging_row(event, record.offset)
    if isinstance(event, OutcomeEvent):
        return outcome_staging_row(event, record.offset, envelope.trace_id(headers))
    return staging_row(event, record.offset, envelope.trace_id(headers))
