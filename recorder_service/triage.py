"""Sorting a batch's records into rows to write and records that can never be written.

A record that is not a readable event, is of a schema version this recorder does not read, or
cannot be turned into a row is rejected here, with the reason, and goes to the dead-letter
topic; the database may still refuse a row later (store.py), which rejects it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from recorder_service.batching import Record
from recorder_service.rows import StagingRow, staging_row
from studentperf import envelope


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (its `dead-letter-reason` header)."""

    UNDECODABLE = "undecodable"
    UNKNOWN_SCHEMA_VERSION = "unknown-schema-version"
    INVALID_EVENT = "invalid-event"
    CONSTRAINT_VIOLATION = "constraint-violation"


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
            event = envelope.decode(record.value, record.headers)
            row = staging_row(event, seq, envelope.trace_id(record.headers))
        except envelope.UnknownSchemaVersion as error:
            out.rejected.append(Rejected(record, Reason.UNKNOWN_SCHEMA_VERSION, str(error)))
        except envelope.UndecodableEvent as error:
            out.rejected.append(Rejected(record, Reason.UNDECODABLE, str(error)))
        except (ValueError, OverflowError) as error:
            out.rejected.append(Rejected(record, Reason.INVALID_EVENT, f"not storable: {error}"))
        else:
            out.rows.append(row)
            out.sources.append(record)
    return out
