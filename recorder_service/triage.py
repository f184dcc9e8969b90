"""Sorting a batch's records into rows to write and records that can never be written.

A record that is not a readable event, is of a schema version this recorder does not read, or
cannot be turned into a row is rejected here, with the reason, and goes to the dead-letter
topic; the database may still refuse a row later (store.py), which rejects it the same way.

Whatever a record holds, triage does not raise: an error nobody foresaw while reading one
record is that record's problem (`unexpected-error`), never a reason to stop recording. Error
texts name the rule a record broke and never quote its values, which can be a student's data.

A rejected record notes the students it names and its time (`Rejected.students`, `.as_of`):
the store skips it, rather than dead-letter it, when one of them was erased at or after that
time (recorder_service/erasure.py), for its letter would be a new copy of the erased student's
data. See `named_by` for how a record that is no event is tied to a student and a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from recorder_service.batching import Record, UnreadableRecord
from recorder_service.erasure import Erasure, Named
from recorder_service.rows import (
    StagingRow,
    import_staging_row,
    occurred_at,
    outcome_staging_row,
    staging_row,
)
from recorder_service.settings import DEFAULT_MAX_FUTURE_SKEW_S
from studentperf import envelope
from studentperf.student_id import student_id_is_valid
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
    # The students the record names and its time (`named_by`): none for a record refused by the
    # database, whose student was not erased when it was written (store.py checked first).
    students: tuple[str, ...] = ()
    as_of: datetime | None = None


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

    def named(self) -> list[Named]:
        """The students the rejected records name, each with its record's place in `rejected`
        and time, for the store to look up with the rows' students."""
        return [
            Named(index, student, r.as_of)
            for index, r in enumerate(self.rejected)
            if r.as_of is not None
            for student in r.students
        ]


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
            out.rejected.append(_rejected(record, Reason.UNDECODABLE, record.error))
            continue
        try:
            row = _row(record, latest, max_future_skew)
        except _Refused as refused:
            out.rejected.append(_rejected(record, refused.reason, refused.error))
        except Exception as error:  # one record's problem, not the recorder's
            error_text = f"{type(error).__name__} while reading the record"
            out.rejected.append(_rejected(record, Reason.UNEXPECTED_ERROR, error_text))
        else:
            if isinstance(row, Erasure):
                out.erasures.append(row)
                continue
            out.rows.append(row)
            out.sources.append(record)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Refused for the time they give, or for a layout that may give the field another meaning:
# their occurred_at puts them nowhere.
_TIME_UNTRUSTED = (Reason.FUTURE_EVENT, Reason.UNKNOWN_SCHEMA_VERSION)


def _rejected(record: Record, reason: Reason, error: str) -> Rejected:
    try:
        students, as_of = named_by(record, reason)
    except Exception:  # tied to no student: dead-lettered, as before
        students, as_of = (), None
    return Rejected(record, reason, error, students=students, as_of=as_of)


def named_by(record: Record, reason: str) -> tuple[tuple[str, ...], datetime | None]:
    """The students a refused record names, and its time (`reason`: why it was refused).

    The replay of dead letters (replay_dead_letters.py) asks it of each letter's original too:
    a letter of a student erased since is not put back into the topic.

    Every event is keyed by its student's id (studentperf.envelope), so the key names one when
    it is a student id by the rule: no other can be an erased student's, for an erasure event
    whose id breaks it is refused. The value names one when it still parses as the event its
    content type says, whatever rule it broke (it may name another student than the key: both
    count, for its letter would copy both).

    Its time is the event's occurred_at, which puts every event before or after an erasure:
    the record is then judged as it would be were it valid, and an event held up in a spool is
    placed when it occurred, not when it reached Kafka. A record without a readable one, or
    refused for it (from the future) or for a schema version whose fields may mean something
    else, is placed by its Kafka timestamp: when it was produced (or appended), normally no
    earlier than it occurred. With neither it is tied to no student."""
    students = []
    if record.key:
        try:
            key = record.key.decode("ascii")
        except UnicodeDecodeError:
            pass
        else:
            if student_id_is_valid(key):
                students.append(key)
    event = envelope.parse_unchecked(record.value, record.headers or ())
    as_of = None
    if event is not None:
        students += [sid for sid in envelope.student_ids(event) if student_id_is_valid(sid)]
        if reason not in _TIME_UNTRUSTED and event.HasField("occurred_at"):
            with contextlib.suppress(ValueError, OverflowError):  # no date: the timestamp's
                as_of = occurred_at(event)
    if as_of is None and record.timestamp >= 0:
        as_of = _EPOCH + timedelta(milliseconds=record.timestamp)
    if not students or as_of is None:
        return (), None
    return tuple(dict.fromkeys(students)), as_of


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
    return staging_row(event, record.offset, envelope.trace_id(headers), when)
