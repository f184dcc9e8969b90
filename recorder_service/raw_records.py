"""Reading a partition without aiokafka's record decoder, for the records it cannot read.

aiokafka decodes every record of a fetched batch, header names as strict UTF-8, even the records
before the position it was asked for; one name that is not UTF-8 makes every record of its
batch unreadable to it (see polling.py). This fetches the partition's raw record batches with a
plain FetchRequest and parses them itself (record batch format v2, the only one Kafka 4 writes):
a record whose header names are UTF-8 comes out as aiokafka would give it, one whose names are
not as an UnreadableRecord with its key, value and headers (the bad names escaped).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.codec import (
    gzip_decode,
    has_gzip,
    has_lz4,
    has_snappy,
    has_zstd,
    lz4_decode,
    snappy_decode,
    zstd_decode,
)
from aiokafka.errors import CorruptRecordException, LeaderNotAvailableError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.util import decode_varint

from recorder_service.batching import Record, UnreadableRecord

UNREADABLE = (
    "a header name is not UTF-8: the Kafka client cannot read the record;"
    " those names are kept with their bytes escaped (\\xNN)"
)
# Batch header after base offset and length: leader epoch, magic, crc, attributes,
# last offset delta, first and max timestamp, producer id and epoch, base sequence, count.
_BATCH = struct.Struct(">qiiBIhiqqqhii")


class _Codec(NamedTuple):
    name: str
    # aiokafka reads all but gzip only with cramjam (the recorder extra installs it); where it
    # is missing, such a batch's records are dead-lettered rather than stop the recorder.
    readable: Callable[[], bool]
    decode: Callable[[bytes], bytes]


# Kafka's codecs, by the number a batch's attributes give.
_CODECS: Mapping[int, _Codec] = {
    1: _Codec("gzip", has_gzip, gzip_decode),
    2: _Codec("snappy", has_snappy, snappy_decode),
    3: _Codec("lz4", has_lz4, lz4_decode),
    4: _Codec("zstd", has_zstd, zstd_decode),
}
_CONTROL = 0x20
_LOG_APPEND_TIME = 0x08
FETCH_MAX_BYTES = 1024 * 1024  # aiokafka's max_partition_fetch_bytes


def undecompressable(codec: int) -> str:
    """Why a batch compressed with `codec` is not read, and what becomes of its records."""
    return (
        f"its record batch is compressed with {unreadable_codec(codec)};"
        " its key, value and headers are left in the source topic"
    )


def unreadable_codec(codec: int) -> str:
    """`codec`, and why this client cannot read it (with what to install, if that helps)."""
    if codec in _CODECS:
        return (
            f"{_CODECS[codec].name}, and its library (cramjam) is not installed:"
            " pip install 'studentperf[recorder]' brings it"
        )
    return f"codec {codec}, which this Kafka client does not know"


def codec_named(name: str) -> int | None:
    """The number of the codec aiokafka calls `name` (None: not one of Kafka's)."""
    return next((n for n, codec in _CODECS.items() if codec.name == name), None)


@dataclass(frozen=True, slots=True)
class FetchedRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


def parse(
    data: bytes, tp: TopicPartition, start: int, budget: int
) -> tuple[list[Record], int | None]:
    """The records at `start` or later in whole batches, stopping after the batch that reaches
    `budget`; and the offset after the last batch read (None: no whole batch in `data`)."""
    records: list[Record] = []
    next_offset: int | None = None
    pos = 0
    try:
        while pos + 12 <= len(data) and len(records) < budget:
            base_offset, length = struct.unpack_from(">qi", data, pos)
            end = pos + 12 + length
            if end > len(data):
                break  # cut off by the fetch size: read it next time
            _, _, _, magic, _, attributes, last_delta, first_ts, max_ts, *_, count = (
                _BATCH.unpack_from(data, pos)
            )
            if magic != 2:
                raise CorruptRecordException(f"{tp}: record batch format v{magic}")
            body = data[pos + _BATCH.size : end]
            codec = attributes & 0x07
            if attributes & _CONTROL:
                pass  # transaction markers: no record
            elif codec and not (codec in _CODECS and _CODECS[codec].readable()):
                # aiokafka cannot read it either: what the batch holds is unknown here, and
                # the recorder goes on past it rather than stop at it.
                first = max(start, base_offset)
                records += [
                    UnreadableRecord(
                        tp.topic,
                        tp.partition,
                        offset,
                        undecompressable(codec),
                        max_ts if attributes & _LOG_APPEND_TIME else first_ts,
                    )
                    for offset in range(first, base_offset + last_delta + 1)
                ]
            else:
                if codec:
                    body = _CODECS[codec].decode(body)
                log_append = bool(attributes & _LOG_APPEND_TIME)
                for record in _records(bytearray(body), count, tp, base_offset, first_ts):
                    if record.offset >= start:
                        records.append(_stamped(record, max_ts) if log_append else record)
            next_offset = base_offset + last_delta + 1
            pos = end
    except (struct.error, IndexError, KeyError, ValueError) as error:
        raise CorruptRecordException(f"{tp}: {type(error).__name__} parsing a batch") from None
    return records, next_offset


def _stamped(record: Record, timestamp: int) -> Record:
    if isinstance(record, FetchedRecord):
        return FetchedRecord(
            record.topic,
            record.partition,
            record.offset,
            timestamp,
            record.key,
            record.value,
            record.headers,
        )
    return record


def _records(
    body: bytearray, count: int, tp: TopicPartition, base_offset: int, first_ts: int
) -> list[Record]:
    out: list[Record] = []
    pos = 0
    for _ in range(count):
        length, pos = decode_varint(body, pos)
        end = pos + length
        pos += 1  # attributes, unused
        ts_delta, pos = decode_varint(body, pos)
        offset_delta, pos = decode_varint(body, pos)
        key, pos = _bytes(body, pos)
        value, pos = _bytes(body, pos)
        n_headers, pos = decode_varint(body, pos)
        names: list[bytes] = []
        values: list[bytes | None] = []
        for _ in range(n_headers):
            name, pos = _bytes(body, pos)
            names.append(name or b"")
            header_value, pos = _bytes(body, pos)
            values.append(header_value)
        if pos != end:
            raise ValueError("record length")
        offset, timestamp = base_offset + offset_delta, first_ts + ts_delta
        try:
            headers = tuple((n.decode(), v) for n, v in zip(names, values, strict=True))
        except UnicodeDecodeError:
            escaped = [
                (n.decode(errors="backslashreplace"), v) for n, v in zip(names, values, strict=True)
            ]
            out.append(
                UnreadableRecord(
                    tp.topic, tp.partition, offset, UNREADABLE, timestamp, key, value, escaped
                )
            )
        else:
            out.append(
                FetchedRecord(tp.topic, tp.partition, offset, timestamp, key, value, headers)
            )
    return out


def _bytes(body: bytearray, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(body, pos)
    if length < 0:
        return None, pos
    if pos + length > len(body):
        raise IndexError("field past the record")
    return bytes(body[pos : pos + length]), pos + length


class RawFetcher:
    """Fetches a partition's raw record batches from its leader, with a client of its own."""

    def __init__(self, bootstrap_servers: str, client_options: Mapping[str, Any]) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_options = dict(client_options)
        self._client: AIOKafkaClient | None = None

    async def __call__(self, tp: TopicPartition, offset: int, wait_ms: int) -> bytes:
        client = await self._started()
        await client.add_topic(tp.topic)
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            await client.force_metadata_update()
            raise LeaderNotAvailableError(str(tp))
        request = FetchRequest(
            max_wait_time=wait_ms,
            min_bytes=1,
            max_bytes=FETCH_MAX_BYTES,
            isolation_level=0,  # read_uncommitted, as the recorder's consumer
            topics=[(tp.topic, [(tp.partition, offset, FETCH_MAX_BYTES)])],
        )
        response = await client.send(leader, request)
        for _, partitions in response.topics:
            for partition, error_code, _, *data in partitions:
                if partition == tp.partition:
                    if error_code:
                        raise for_code(error_code)(str(tp))
                    return bytes(data[-1] or b"")
        return b""

    async def _started(self) -> AIOKafkaClient:
        if self._client is None:
            client = AIOKafkaClient(
                bootstrap_servers=self._bootstrap_servers,
                client_id="studentperf-recorder-raw",
                **self._client_options,
            )
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._client = client
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
