"""The Kafka wire envelope of the events, used by the producer and the consumer alike.

One topic carries three kinds of event: a `PredictionEvent` per prediction, an `OutcomeEvent`
per outcome RecordOutcomes accepted, an `ImportEvent` per good row of a CSV import and an
`ErasureEvent` per EraseStudent call (issue 15).
key: the student id (UTF-8), so all of one student's events land on one partition, in order.
value: the serialized event.
headers: the schema version and the content type, readable without decoding the value. The
content type names the event's message; a record whose content type is neither
OUTCOME_CONTENT_TYPE, IMPORT_CONTENT_TYPE nor ERASURE_CONTENT_TYPE (or that has none: every
event written before outcomes went through Kafka) is read as a PredictionEvent, as it always
was. Then the trace id of the request that made the event (`trace-id`, 32 lowercase hex
digits, see studentperf.tracing), when there was one, which the recorder stores with the row;
and beside it the same trace as a W3C `traceparent` (a parent-id of its own per record), for
consumers that speak trace context.

What is read back may have been written by anyone: a header value may be null (Kafka allows it),
any size, not text, or repeated. Reading never fails on that, and an error names the rule a
record broke, never the values it holds (they can be a student's data).

Records the recorder can never write go to a dead-letter topic unchanged (key, value, headers)
with the `dead-letter-*` headers below added, so they can be inspected and replayed.

Why this module is over 300 lines: it is the one definition of the wire format, and encoding
and decoding of each kind of event, and the dead-letter headers, are read against each other.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, TypeAlias, TypeVar

from google.protobuf.message import DecodeError

from studentperf.erasure import reason_is_valid, requested_by_is_valid
from studentperf.features import NUMERIC_RANGES
from studentperf.outcomes import score_is_valid, term_is_valid
from studentperf.student_id import student_id_is_valid
from studentperf.tracing import TRACEPARENT, traceparent, valid_trace_id
from studentperf.v1.erasure_event_pb2 import ErasureEvent
from studentperf.v1.import_event_pb2 import ImportEvent
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Outcome

AnyEvent: TypeAlias = PredictionEvent | OutcomeEvent | ImportEvent | ErasureEvent
SCHEMA_VERSION = 1
CONTENT_TYPE = b"application/x-protobuf; messageType=studentperf.v1.PredictionEvent"
OUTCOME_CONTENT_TYPE = b"application/x-protobuf; messageType=studentperf.v1.OutcomeEvent"
IMPORT_CONTENT_TYPE = b"application/x-protobuf; messageType=studentperf.v1.ImportEvent"
ERASURE_CONTENT_TYPE = b"application/x-protobuf; messageType=studentperf.v1.ErasureEvent"
SCHEMA_VERSION_HEADER = "schema-version"
CONTENT_TYPE_HEADER = "content-type"
TRACE_ID_HEADER = "trace-id"
TRACEPARENT_HEADER = TRACEPARENT
_VERSION = str(SCHEMA_VERSION).encode()
_TRACE_ID_BYTES = 32


class UndecodableEvent(ValueError):
    """A record that is not an event this code can read; the message says why."""


class InvalidOutcome(UndecodableEvent):
    """An outcome event that parses but whose outcome breaks a rule of RecordOutcomes."""


class InvalidImport(InvalidOutcome):
    """An import event that parses but breaks a rule of its row: its outcome's (as an outcome
    event's), or its profile's or source's; refused the same way."""


class InvalidErasure(UndecodableEvent):
    """An erasure event that parses but breaks a rule of EraseStudent."""


class UnknownSchemaVersion(UndecodableEvent):
    """An event written for a schema version this code does not read."""


# A header as read from the topic: Kafka allows a null value.
Header = tuple[str, bytes | None]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _trace_headers(trace_id: str) -> list[tuple[str, bytes]]:
    return [
        (TRACE_ID_HEADER, trace_id.encode()),
        (TRACEPARENT_HEADER, traceparent(trace_id).encode()),
    ]


def encode(event: PredictionEvent, *, trace_id: str | None = None) -> KafkaRecord:
    headers = [
        (SCHEMA_VERSION_HEADER, str(event.schema_version).encode()),
        (CONTENT_TYPE_HEADER, CONTENT_TYPE),
    ]
    if trace_id is not None:
        headers += _trace_headers(trace_id)
    return KafkaRecord(
        key=event.input.profile.student_id.encode(),
        value=event.SerializeToString(),
        headers=headers,
    )


def encode_outcome(event: OutcomeEvent, *, trace_id: str | None = None) -> KafkaRecord:
    headers = [
        (SCHEMA_VERSION_HEADER, str(event.schema_version).encode()),
        (CONTENT_TYPE_HEADER, OUTCOME_CONTENT_TYPE),
    ]
    if trace_id is not None:
        headers += _trace_headers(trace_id)
    return KafkaRecord(
        key=event.outcome.student_id.encode(),
        value=event.SerializeToString(),
        headers=headers,
    )


def encode_import(event: ImportEvent) -> KafkaRecord:
    return KafkaRecord(
        key=event.outcome.student_id.encode(),
        value=event.SerializeToString(),
        headers=[
            (SCHEMA_VERSION_HEADER, str(event.schema_version).encode()),
            (CONTENT_TYPE_HEADER, IMPORT_CONTENT_TYPE),
        ],
    )


def encode_erasure(event: ErasureEvent, *, trace_id: str | None = None) -> KafkaRecord:
    """Keyed by the student, as the student's other events: ordered after them."""
    headers = [
        (SCHEMA_VERSION_HEADER, str(event.schema_version).encode()),
        (CONTENT_TYPE_HEADER, ERASURE_CONTENT_TYPE),
    ]
    if trace_id is not None:
        headers += _trace_headers(trace_id)
    return KafkaRecord(
        key=event.student_id.encode(), value=event.SerializeToString(), headers=headers
    )


def _content_type(headers: Sequence[Header]) -> bytes | None:
    """The record's first content-type header."""
    for name, value in headers:
        if name == CONTENT_TYPE_HEADER:
            return value
    return None


def is_outcome(headers: Sequence[Header]) -> bool:
    """Whether the record says it holds an OutcomeEvent (its first content-type header)."""
    return _content_type(headers) == OUTCOME_CONTENT_TYPE


def is_erasure(headers: Sequence[Header]) -> bool:
    """Whether the record says it holds an ErasureEvent (its first content-type header)."""
    return _content_type(headers) == ERASURE_CONTENT_TYPE


def is_import(headers: Sequence[Header]) -> bool:
    """Whether the record says it holds an ImportEvent (its first content-type header)."""
    return _content_type(headers) == IMPORT_CONTENT_TYPE


def trace_id(headers: Sequence[Header]) -> str | None:
    """The record's trace id (the first `trace-id` header); None when it has none, or one that
    is null or not a valid trace id (an event is recorded all the same: the trace is lost, not
    the prediction)."""
    for name, value in headers:
        if name == TRACE_ID_HEADER:
            if not isinstance(value, bytes) or len(value) != _TRACE_ID_BYTES:
                return None
            text = value.decode("ascii", errors="replace")
            return text if valid_trace_id(text) else None
    return None


def _shown_version(header: bytes | None) -> str:
    """A schema-version header as an error may show it: a short number, or what it is not."""
    if header is None:
        return "without a value"
    if 0 < len(header) <= 10 and header.isdigit():
        return header.decode()
    return "that is not a version number"


def _check_version(headers: Sequence[Header]) -> None:
    # The header is checked first: an event of another version may not even parse as this one.
    # Every copy of it is: a record that claims two versions is not one this code reads.
    for name, header in headers:
        if name == SCHEMA_VERSION_HEADER and header != _VERSION:
            raise UnknownSchemaVersion(
                f"unknown schema-version header {_shown_version(header)}"
                f" (this recorder reads {SCHEMA_VERSION})"
            )


def decode_any(value: bytes | None, headers: Sequence[Header] = ()) -> AnyEvent:
    """Parses a record's value as the event its content type names (see the module's doc)."""
    return _kind(headers).decode(value, headers)


def parse_unchecked(value: bytes | None, headers: Sequence[Header] = ()) -> AnyEvent | None:
    """The record's value parsed as the event its content type names with no rule checked, not
    even its schema version; None when protobuf cannot parse it. Only for what a refused
    record says of its student and time (the recorder keeps no letter of an erased student's
    record): what it returns may break every rule and is never to be stored."""
    event = _kind(headers).event()
    try:
        event.ParseFromString(value or b"")
    except DecodeError:
        return None
    return event


def student_ids(event: AnyEvent) -> list[str]:
    """The student ids the event names, as given (an import's profile may name another student
    than its outcome, which decode_import refuses)."""
    if isinstance(event, PredictionEvent):
        return [event.input.profile.student_id]
    if isinstance(event, OutcomeEvent):
        return [event.outcome.student_id]
    if isinstance(event, ImportEvent):
        return [event.outcome.student_id, event.profile.student_id]
    return [event.student_id]


def decode_erasure(value: bytes | None, headers: Sequence[Header] = ()) -> ErasureEvent:
    """Parses an erasure event, refusing one that breaks a rule of EraseStudent."""
    event = _parse(ErasureEvent, "an ErasureEvent", value, headers)
    _check_event_id(event.event_id, "event_id is missing or not a UUID")
    if not student_id_is_valid(event.student_id):
        raise InvalidErasure("student_id breaks the student id rule")
    if not requested_by_is_valid(event.requested_by):
        raise InvalidErasure("requested_by is missing or not a client name")
    if not reason_is_valid(event.reason):
        raise InvalidErasure("reason breaks the reason rule")
    return event


_Event = TypeVar("_Event", PredictionEvent, OutcomeEvent, ImportEvent, ErasureEvent)


def _parse(
    kind: type[_Event], named: str, value: bytes | None, headers: Sequence[Header]
) -> _Event:
    """The record's value parsed as `kind` (`named` in errors), of the schema version read here."""
    _check_version(headers)
    if not value:
        raise UndecodableEvent("empty record value")
    event = kind()
    try:
        event.ParseFromString(value)
    except DecodeError:
        raise UndecodableEvent(f"not {named}: protobuf cannot parse it") from None
    if event.schema_version != SCHEMA_VERSION:
        raise UnknownSchemaVersion(
            f"unknown schema_version {event.schema_version} (this recorder reads {SCHEMA_VERSION})"
        )
    return event


# The form the services write: accepted by a regex, a fifth of building a uuid.UUID per record.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def _check_event_id(event_id: str, refusal: str = "event_id is not a UUID") -> None:
    try:
        canonical_uuid(event_id)
    except ValueError:
        raise UndecodableEvent(refusal) from None


def canonical_uuid(text: str) -> str:
    """`text`, a UUID in any form Python reads (braces, a urn: prefix, no hyphens), in the
    canonical one, the only one the database driver writes; raises ValueError if none.

    An event's ids are stored in that form: a forged event with another one would otherwise
    fail in the driver, a fault the recorder cannot tell from the database's."""
    return text if _CANONICAL_UUID.fullmatch(text) else str(uuid.UUID(text))


def _check_outcome(outcome: Outcome, invalid: type[InvalidOutcome]) -> None:
    """Refuses, as `invalid`, an outcome that breaks a rule of RecordOutcomes."""
    if not student_id_is_valid(outcome.student_id):
        raise invalid("outcome.student_id breaks the student id rule")
    if not term_is_valid(outcome.term):
        raise invalid("outcome.term breaks the term rule")
    if not outcome.HasField("final_score") or not score_is_valid(outcome.final_score):
        raise invalid("outcome.final_score is missing or not a number from 0 to 100")


def decode_outcome(value: bytes | None, headers: Sequence[Header] = ()) -> OutcomeEvent:
    """Parses an outcome event, refusing what a recorder must not write: an outcome that breaks
    a rule of RecordOutcomes (studentperf.outcomes) is refused like an undecodable record."""
    event = _parse(OutcomeEvent, "an OutcomeEvent", value, headers)
    if not event.event_id or not event.HasField("outcome"):
        raise UndecodableEvent("event_id or outcome missing")
    _check_event_id(event.event_id)
    _check_outcome(event.outcome, InvalidOutcome)
    return event


_SHA256 = re.compile(r"[0-9a-f]{64}")


def decode_import(value: bytes | None, headers: Sequence[Header] = ()) -> ImportEvent:
    """Parses an import event, refusing what a recorder must not write: an outcome that breaks
    a rule of RecordOutcomes, a profile of another student, an age out of its range, or no
    source. (A category number the schema does not know is refused by the database's CHECK.)"""
    event = _parse(ImportEvent, "an ImportEvent", value, headers)
    if not event.event_id or not event.HasField("outcome"):
        raise UndecodableEvent("event_id or outcome missing")
    _check_event_id(event.event_id)
    _check_outcome(event.outcome, InvalidImport)
    if event.profile.student_id != event.outcome.student_id:
        raise InvalidImport("profile.student_id differs from outcome.student_id")
    low, high = NUMERIC_RANGES["age"]
    if event.profile.HasField("age") and not low <= event.profile.age <= high:
        raise InvalidImport(f"profile.age is not a whole number from {low:.0f} to {high:.0f}")
    source = event.source
    if _SHA256.fullmatch(source.file_sha256) is None or source.line < 1:
        raise InvalidImport("source needs the file's SHA-256 (64 lower-case hex) and a line >= 1")
    return event


def decode(value: bytes | None, headers: Sequence[Header] = ()) -> PredictionEvent:
    """Parses a record's value as a prediction event, refusing what a recorder must not write."""
    event = _parse(PredictionEvent, "a PredictionEvent", value, headers)
    if not event.event_id or not event.HasField("prediction"):
        raise UndecodableEvent("event_id or prediction missing")
    if event.event_id != event.prediction.prediction_id:
        raise UndecodableEvent("event_id differs from prediction.prediction_id")
    _check_event_id(event.event_id)
    return event


class _Kind(NamedTuple):
    event: type[AnyEvent]
    decode: Callable[[bytes | None, Sequence[Header]], AnyEvent]


# By content type; a record with another, or none, is read as a prediction (the module's doc).
_KINDS: Mapping[bytes | None, _Kind] = {
    OUTCOME_CONTENT_TYPE: _Kind(OutcomeEvent, decode_outcome),
    IMPORT_CONTENT_TYPE: _Kind(ImportEvent, decode_import),
    ERASURE_CONTENT_TYPE: _Kind(ErasureEvent, decode_erasure),
}
_PREDICTION = _Kind(PredictionEvent, decode)


def _kind(headers: Sequence[Header]) -> _Kind:
    return _KINDS.get(_content_type(headers), _PREDICTION)


# Every header the dead-letter topic adds starts so; an original's own never does.
DEAD_LETTER_HEADER_PREFIX = "dead-letter-"
DEAD_LETTER_REASON_HEADER = "dead-letter-reason"
DEAD_LETTER_ERROR_HEADER = "dead-letter-error"
DEAD_LETTER_SOURCE_TOPIC_HEADER = "dead-letter-source-topic"
DEAD_LETTER_SOURCE_PARTITION_HEADER = "dead-letter-source-partition"
DEAD_LETTER_SOURCE_OFFSET_HEADER = "dead-letter-source-offset"
DEAD_LETTER_SOURCE_TIMESTAMP_HEADER = "dead-letter-source-timestamp-ms"
DEAD_LETTER_FIRST_SEEN_HEADER = "dead-letter-first-seen-at"
DEAD_LETTER_ATTEMPTS_HEADER = "dead-letter-attempts"
# Longer error texts are cut: a header is for reading, the full error is in the recorder's log.
_MAX_ERROR_BYTES = 2048


def without_dead_letter_headers(headers: Sequence[Header]) -> tuple[Header, ...]:
    """A record's headers less any `dead-letter-*` one: its original's, as they were sent."""
    return tuple((k, v) for k, v in headers if not k.startswith(DEAD_LETTER_HEADER_PREFIX))


def dead_letter_headers(
    original: Sequence[Header],
    *,
    reason: str,
    error: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    first_seen_at: datetime,
    attempts: int,
) -> list[Header]:
    """The original record's headers (earlier dead-letter ones dropped, null values kept) plus
    where it came from and why it could not be written; (topic, partition, offset) identifies
    it, so a reader can drop the copies a redelivery may add. `error` must name the rule the
    record broke, not quote its values."""
    return [
        *without_dead_letter_headers(original),
        (DEAD_LETTER_REASON_HEADER, reason.encode()),
        (DEAD_LETTER_ERROR_HEADER, error.encode()[:_MAX_ERROR_BYTES]),
        (DEAD_LETTER_SOURCE_TOPIC_HEADER, topic.encode()),
        (DEAD_LETTER_SOURCE_PARTITION_HEADER, str(partition).encode()),
        (DEAD_LETTER_SOURCE_OFFSET_HEADER, str(offset).encode()),
        (DEAD_LETTER_SOURCE_TIMESTAMP_HEADER, str(timestamp_ms).encode()),
        (DEAD_LETTER_FIRST_SEEN_HEADER, first_seen_at.isoformat().encode()),
        (DEAD_LETTER_ATTEMPTS_HEADER, str(attempts).encode()),
    ]
