"""The Kafka wire envelope of a prediction event, used by the producer and the consumer alike.

key: the student id (UTF-8), so all of one student's events land on one partition, in order.
value: the serialized `PredictionEvent`.
headers: the schema version and the content type, readable without decoding the value; and
the trace id of the request that made the prediction (`trace-id`, 32 lowercase hex digits, see
studentperf.tracing), when there was one, which the recorder stores with the row.

Records the recorder can never write go to a dead-letter topic unchanged (key, value, headers)
with the `dead-letter-*` headers below added, so they can be inspected and replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import DecodeError

from studentperf.tracing import valid_trace_id
from studentperf.v1.prediction_event_pb2 import PredictionEvent

SCHEMA_VERSION = 1
CONTENT_TYPE = b"application/x-protobuf; messageType=studentperf.v1.PredictionEvent"
SCHEMA_VERSION_HEADER = "schema-version"
CONTENT_TYPE_HEADER = "content-type"
TRACE_ID_HEADER = "trace-id"


class UndecodableEvent(ValueError):
    """A record that is not a prediction event this code can read; the message says why."""


class UnknownSchemaVersion(UndecodableEvent):
    """An event written for a schema version this code does not read."""


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode(event: PredictionEvent, *, trace_id: str | None = None) -> KafkaRecord:
    headers = [
        (SCHEMA_VERSION_HEADER, str(event.schema_version).encode()),
        (CONTENT_TYPE_HEADER, CONTENT_TYPE),
    ]
    if trace_id is not None:
        headers.append((TRACE_ID_HEADER, trace_id.encode()))
    return KafkaRecord(
        key=event.input.profile.student_id.encode(),
        value=event.SerializeToString(),
        headers=headers,
    )


def trace_id(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The record's trace id; None when it has none, or one that is not a valid trace id (an
    event is recorded all the same: the trace is lost, not the prediction)."""
    for name, value in headers:
        if name == TRACE_ID_HEADER:
            text = value.decode("ascii", errors="replace")
            return text if valid_trace_id(text) else None
    return None


def decode(value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> PredictionEvent:
    """Parses a record's value, refusing what a recorder must not write."""
    # The header is checked first: an event of another version may not even parse as this one.
    for name, header in headers:
        if name == SCHEMA_VERSION_HEADER and header != str(SCHEMA_VERSION).encode():
            raise UnknownSchemaVersion(
                f"unknown schema-version header {header!r} (this recorder reads {SCHEMA_VERSION})"
            )
    if not value:
        raise UndecodableEvent("empty record value")
    event = PredictionEvent()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise UndecodableEvent(f"not a PredictionEvent: {exc}") from None
    if event.schema_version != SCHEMA_VERSION:
        raise UnknownSchemaVersion(
            f"unknown schema_version {event.schema_version} (this recorder reads {SCHEMA_VERSION})"
        )
    if not event.event_id or not event.HasField("prediction"):
        raise UndecodableEvent("event_id or prediction missing")
    if event.event_id != event.prediction.prediction_id:
        raise UndecodableEvent("event_id differs from prediction.prediction_id")
    try:
        uuid.UUID(event.event_id)
    except ValueError:
        raise UndecodableEvent(f"event_id {event.event_id!r} is not a UUID") from None
    return event


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


def dead_letter_headers(
    original: Sequence[tuple[str, bytes]],
    *,
    reason: str,
    error: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    first_seen_at: datetime,
    attempts: int,
) -> list[tuple[str, bytes]]:
    """The original record's headers (earlier dead-letter ones dropped) plus where it came
    from and why it could not be written; (topic, partition, offset) identifies it, so a reader
    can drop the copies a redelivery may add."""
    kept = [(k, v) for k, v in original if not k.startswith("dead-letter-")]
    return [
        *kept,
        (DEAD_LETTER_REASON_HEADER, reason.encode()),
        (DEAD_LETTER_ERROR_HEADER, error.encode()[:_MAX_ERROR_BYTES]),
        (DEAD_LETTER_SOURCE_TOPIC_HEADER, topic.encode()),
        (DEAD_LETTER_SOURCE_PARTITION_HEADER, str(partition).encode()),
        (DEAD_LETTER_SOURCE_OFFSET_HEADER, str(offset).encode()),
        (DEAD_LETTER_SOURCE_TIMESTAMP_HEADER, str(timestamp_ms).encode()),
        (DEAD_LETTER_FIRST_SEEN_HEADER, first_seen_at.isoformat().encode()),
        (DEAD_LETTER_ATTEMPTS_HEADER, str(attempts).encode()),
    ]
