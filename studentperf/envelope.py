"""The Kafka wire envelope of a prediction event, used by the producer and the consumer alike.

key: the student id (UTF-8), so all of one student's events land on one partition, in order.
value: the serialized `PredictionEvent`.
headers: the schema version and the content type, readable without decoding the value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from studentperf.v1.prediction_event_pb2 import PredictionEvent

SCHEMA_VERSION = 1
CONTENT_TYPE = b"application/x-protobuf; messageType=studentperf.v1.PredictionEvent"
SCHEMA_VERSION_HEADER = "schema-version"
CONTENT_TYPE_HEADER = "content-type"


class UndecodableEvent(ValueError):
    """A record that is not a prediction event this code can read; the message says why."""


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode(event: PredictionEvent) -> KafkaRecord:
    return KafkaRecord(
        key=event.input.profile.student_id.encode(),
        value=event.SerializeToString(),
        headers=[
            (SCHEMA_VERSION_HEADER, str(event.schema_version).encode()),
            (CONTENT_TYPE_HEADER, CONTENT_TYPE),
        ],
    )


def decode(value: bytes | None) -> PredictionEvent:
    """Parses a record's value, refusing what a recorder must not write."""
    if not value:
        raise UndecodableEvent("empty record value")
    event = PredictionEvent()
    try:
        event.ParseFromString(value)
    except DecodeError as exc:
        raise UndecodableEvent(f"not a PredictionEvent: {exc}") from None
    if event.schema_version != SCHEMA_VERSION:
        raise UndecodableEvent(
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
