"""Sorting a batch's records into rows to write and records that can never be written.

A record that is not a readable event, is of a schema version this recorder does not read, or
cannot be turned into a row is rejected here, with the reason, and goes to the dead-letter
topic; the database may still refuse a row later (store.py), which rejects it the same way.

Whatever a record holds, triage does not raise: an error nobody foresaw while reading one
record is that record's problem (`unexpected-error`), never a reason to stop recording. Error
texts name the rule a record broke and never quote its values, which can be a student's data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from recorder_service.batching import Record
from recorder_service.rows import StagingRow, occurred_at, staging_row
from studentperf import envelope


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (its `dead-letter-reason` header)."""

    UNDECODABLE = "undecodable"
    UNKNOWN_SCHEMA_VERSION = "unknown-schema-version"
    INVALID_EVENT = "invalid-event"
    # Refused by the database (store.py): a constraint (SQLSTATE class 23), or a value the
    # column cannot hold (class 22, or the driver could not encode it).
    CONSTRAINT_VIOLATION = "constraint-violation"
    INVALID_DATA = "invalid-data"
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


def triage(records: Iterable[Record]) -> Triaged:
    """Rows for the records that are events (in the given order), and the rest, rejected."""
    out = Triaged()
    for seq, record in enumerate(records):
        try:
            row = _row(record, seq)
        except _Refused as refused:
            out.rejected.append(Rejected(record, refused.reason, refused.error))
        except Exception as error:  # one record's problem, not the recorder's
            error_text = f"{type(error).__name__} while reading the record"
            out.rejected.append(Rejected(record, Reason.UNEXPECTED_ERROR, error_text))
        else:
            out.rows.append(row)
            out.sources.append(record)
    return out


class _Refused(Exception):
    def __init__(self, reason: Reason, error: str) -> None:
        self.reason = reason
        self.error = error


def _row(record: Record, seq: int) -> StagingRow:
    headers = record.headers or ()
    try:
        event = envelope.decode(record.value, headers)
    except envelope.UnknownSchemaVersion as error:
        raise _Refused(Reason.UNKNOWN_SCHEMA_VERSION, str(error)) from None
    except envelope.UndecodableEvent as error:
        raise _Refused(Reason.UNDECODABLE, str(error)) from None
    try:
        occurred_at(event)
    except (ValueError, OverflowError):
        raise _Refused(
            Reason.INVALID_EVENT, "not storable: occurred_at is not a date between years 1-9999"
        ) from None
    return staging_row(event, seq, envelope.trace_id(headers))
