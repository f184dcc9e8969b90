"""The spool's segment files: their format, reading them back, and rewriting them durably.

Segment layout: the 8-byte MAGIC, a header `[u32 length][u32 crc32][destination as JSON]`,
then frames of `[FRAME_MARK][u32 body length][u32 crc32 of length and body][body]`, where body
is `[u16 key length][key][u32 value length][value][u16 header count]` followed by
`[u16 name length][name][u32 value length][value]` per header. The 4-byte mark before each
frame lets a reader find the frames after a damaged one: it scans forward to the next mark
whose frame checks, skipping (and counting) the damaged bytes, rather than losing every frame
after them. A torn frame at the end of a segment (a crash mid-write, before its call was
answered) is cut off when the spool opens (inference_service.spool).

Each segment records the destination its events were meant for (`Destination`: the Kafka
cluster's id and the topic), so a spool is never replayed into another cluster or topic: see
`refusal`, which the replayer applies.

Segments of the first format (MAGIC_V1: no destination, no frame marks) are still read, but as
of no known destination, so they are refused rather than replayed.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from studentperf.durable import fsync_path
from studentperf.envelope import KafkaRecord

MAGIC = b"SPSPOOL2"
MAGIC_V1 = b"SPSPOOL1"
FRAME_MARK = b"\xa5SPf"
_HEAD = struct.Struct(">II")  # length, crc32
SUFFIX = ".spool"


@dataclass(frozen=True)
class Destination:
    """Where a segment's events are meant to go.

    `cluster_id` is empty when the segment was written before the service had reached Kafka;
    the bootstrap servers it was configured with then stand in for the cluster.
    """

    topic: str
    bootstrap_servers: str
    cluster_id: str = ""

    def describe(self) -> str:
        cluster = f"cluster {self.cluster_id}" if self.cluster_id else "a cluster not yet reached"
        return f"topic {self.topic!r} at {cluster} (bootstrap {self.bootstrap_servers})"

    def encode(self) -> bytes:
        body = json.dumps(
            {
                "topic": self.topic,
                "cluster_id": self.cluster_id,
                "bootstrap_servers": self.bootstrap_servers,
            }
        ).encode()
        return _HEAD.pack(len(body), zlib.crc32(body)) + body


def refusal(written_for: Destination | None, sending_to: Destination) -> str | None:
    """Why a segment must not be sent to `sending_to`, or None when it may.

    `sending_to` is a connected producer's destination, so its cluster id is known. A segment
    whose cluster id is not known goes only where the same bootstrap servers lead.
    """
    if written_for is None:
        return "it does not say which cluster and topic it was written for"
    if written_for.topic != sending_to.topic:
        return f"it was written for {written_for.describe()}"
    if written_for.cluster_id:
        if written_for.cluster_id != sending_to.cluster_id:
            return f"it was written for {written_for.describe()}"
        return None
    if written_for.bootstrap_servers != sending_to.bootstrap_servers:
        return f"it was written for {written_for.describe()}"
    return None


def encode_frame(record: KafkaRecord) -> bytes:
    parts = [struct.pack(">H", len(record.key)), record.key]
    parts += [struct.pack(">I", len(record.value)), record.value]
    parts.append(struct.pack(">H", len(record.headers)))
    for name, value in record.headers:
        encoded = name.encode()
        parts += [struct.pack(">H", len(encoded)), encoded, struct.pack(">I", len(value)), value]
    body = b"".join(parts)
    length = struct.pack(">I", len(body))
    return FRAME_MARK + length + struct.pack(">I", zlib.crc32(length + body)) + body


def _decode_body(body: bytes) -> KafkaRecord:
    at = 0

    def take(size_format: str) -> bytes:
        nonlocal at
        (size,) = struct.unpack_from(size_format, body, at)
        at += struct.calcsize(size_format)
        chunk = body[at : at + size]
        at += size
        return chunk

    key = take(">H")
    value = take(">I")
    (count,) = struct.unpack_from(">H", body, at)
    at += 2
    headers = [(take(">H").decode(), take(">I")) for _ in range(count)]
    return KafkaRecord(key=key, value=value, headers=headers)


@dataclass
class SegmentContents:
    """What a segment file holds: its destination, its readable records, and its damage."""

    destination: Destination | None
    records: list[KafkaRecord] = field(default_factory=list)
    end: int = 0  # where the last readable frame ends: what follows is a torn tail
    damaged_bytes: int = 0  # skipped between readable frames
    damaged_regions: int = 0


def _frame_at(data: bytes, at: int) -> tuple[bytes, int] | None:
    """The body of the frame starting at `at` and where it ends, or None if it does not check."""
    if data[at : at + len(FRAME_MARK)] != FRAME_MARK:
        return None
    head = at + len(FRAME_MARK)
    if head + _HEAD.size > len(data):
        return None
    length, crc = _HEAD.unpack_from(data, head)
    start = head + _HEAD.size
    body = data[start : start + length]
    if len(body) < length or zlib.crc32(data[head : head + 4] + body) != crc:
        return None
    return body, start + length


def _read_header(data: bytes) -> tuple[Destination | None, int]:
    at = len(MAGIC)
    if at + _HEAD.size > len(data):
        return None, at
    length, crc = _HEAD.unpack_from(data, at)
    body = data[at + _HEAD.size : at + _HEAD.size + length]
    if len(body) < length or zlib.crc32(body) != crc:
        return None, at
    try:
        found = json.loads(body)
        destination = Destination(
            topic=found["topic"],
            bootstrap_servers=found["bootstrap_servers"],
            cluster_id=found["cluster_id"],
        )
    except (ValueError, KeyError, TypeError):
        return None, at
    return destination, at + _HEAD.size + length


def read_segment(path: Path) -> SegmentContents:
    """The segment's destination and readable records; damaged frames are skipped, counted."""
    data = path.read_bytes()
    if data.startswith(MAGIC_V1):
        return _read_v1(data)
    destination, at = _read_header(data)
    contents = SegmentContents(destination, end=at)
    while at < len(data):
        frame = _frame_at(data, at)
        if frame is not None:
            body, at = frame
            contents.records.append(_decode_body(body))
            contents.end = at
            continue
        found = data.find(FRAME_MARK, at + 1)
        while found != -1 and _frame_at(data, found) is None:
            found = data.find(FRAME_MARK, found + 1)
        if found == -1:
            break  # nothing readable after this point: a torn tail, or damage to the end
        contents.damaged_bytes += found - at
        contents.damaged_regions += 1
        at = found
    return contents


def _read_v1(data: bytes) -> SegmentContents:
    """A first-format segment: frames without marks, and no destination."""
    contents = SegmentContents(None, end=len(MAGIC_V1))
    at = len(MAGIC_V1)
    while at + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, at)
        body = data[at + _HEAD.size : at + _HEAD.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break
        contents.records.append(_decode_body(body))
        at += _HEAD.size + length
        contents.end = at
    return contents


def write_durably(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def rewrite_segment(
    path: Path, destination: Destination | None, records: Sequence[KafkaRecord]
) -> int:
    """Replaces the segment at `path` with one holding `records` (written aside, fsync'd,
    renamed); returns its size. A first-format segment (no destination) stays in that format."""
    if destination is None:
        bodies = [encode_frame(r)[len(FRAME_MARK) + _HEAD.size :] for r in records]
        data = MAGIC_V1 + b"".join(_HEAD.pack(len(b), zlib.crc32(b)) + b for b in bodies)
    else:
        data = MAGIC + destination.encode() + b"".join(encode_frame(r) for r in records)
    aside = path.with_suffix(".rewriting")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_durably(fd, data)
    finally:
        os.close(fd)
    os.replace(aside, path)
    fsync_path(path.parent)
    return len(data)


def unlink_durably(path: Path) -> None:
    path.unlink()
    fsync_path(path.parent)
