"""Producing record batches by hand: records no Kafka client would write.

aiokafka's producer takes header names as `str` and encodes them as UTF-8, so it cannot write
a name that is not UTF-8; other clients (or a hostile one) can. This builds the batch with
aiokafka's pure-Python batch builder, giving it header names that encode to any bytes, and
sends it with a plain ProduceRequest to the partition's leader, compressed with any of Kafka's
codecs (the builder compresses with aiokafka's codecs, as its producer does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.errors import LeaderNotAvailableError, NotLeaderForPartitionError, for_code
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

LEADER_TRIES = 10


class RawName(str):
    """A header name whose bytes are given, UTF-8 or not (the builder asks for .encode())."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("utf-8", "replace"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[bytes, bytes | None]] = field(default_factory=list)


async def produce_batch(
    bootstrap: str,
    topic: str,
    partition: int,
    records: Sequence[RawRecord],
    *,
    codec: int = 0,
) -> list[int]:
    """Appends the records to the partition as one batch, compressed with `codec` (a record
    batch's codec number: 1 gzip, 2 snappy, 3 lz4, 4 zstd); the offset of each."""
    builder = _DefaultRecordBatchBuilderPy(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=16 * 1024 * 1024,
    )
    for delta, record in enumerate(records):
        headers: list[tuple[str, bytes | None]] = [(RawName(k), v) for k, v in record.headers]
        builder.append(delta, timestamp=None, key=record.key, value=record.value, headers=headers)
    batch = bytes(builder.build())
    request = ProduceRequest(
        transactional_id=None,
        required_acks=-1,
        timeout=30_000,
        topics=[(topic, [(partition, batch)])],
    )
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        for attempt in range(LEADER_TRIES):
            # No public way to learn the leader; the producer asks the same.
            await client._wait_on_metadata(topic)
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            response = await client.send(leader, request)
            [(_, [(_, error_code, base_offset, *_)])] = response.topics
            error = for_code(error_code) if error_code else None
            # A leader not known yet, or moved: nothing was appended, so sending again is safe.
            if error not in (NotLeaderForPartitionError, LeaderNotAvailableError):
                break
            if attempt + 1 < LEADER_TRIES:
                await client.force_metadata_update()
                await asyncio.sleep(0.5)
    finally:
        await client.close()
    if error is not None:
        raise error(f"{topic}[{partition}]")
    return [base_offset + i for i in range(len(records))]
