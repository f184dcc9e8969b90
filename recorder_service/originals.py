"""Reading a dead letter's original where it was: a consumer assigned to its partition and
seeked to its offset, in no group (it commits nothing).

aiokafka reads every codec (the recorder extra brings cramjam), so a record of a batch the
recorder could not decompress when it lettered it is read here whole. Where cramjam is missing
here too, the run stops (ConfigError, exit 2, naming what to install): every letter of that
codec would fail alike, and the fix is this machine's; a codec aiokafka does not know at all
makes only that letter not replayable. An original is gone when the topic's retention (or a
deletion of records) has moved the partition's start past it, or when its offset holds no
record any more (compaction): such a letter cannot be replayed, and the caller is told why
rather than the run stopped. A Kafka that does not answer in time does stop the run
(TimeoutError): the letter may well be readable, and is tried again next run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError, UnsupportedCodecError

from recorder_service.letters import Original, Source
from recorder_service.raw_records import codec_named, unreadable_codec
from studentperf import envelope
from studentperf.config import ConfigError

CLIENT_ID = "studentperf-replay-originals"
# Records of one partition kept from a fetch: letters of neighbouring originals (a poisoned
# burst) then cost one fetch, not one each.
_KEPT = 500
# aiokafka's words for a codec it knows whose library is not installed (record/*_records.py).
_LIBRARY_MISSING = re.compile(r"Libraries for (\w+) compression codec not found")


async def partitions(
    bootstrap_servers: str, client_options: Mapping[str, Any], client_id: str
) -> dict[str, frozenset[int]]:
    """Every topic of the cluster with its partitions, from one metadata request (a consumer
    knows only the topics it was given, and not their partitions before it fetches)."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers, client_id=client_id, **client_options
    )
    try:
        await client.bootstrap()
        cluster = await client.fetch_all_metadata()
        return {t: frozenset(cluster.partitions_for_topic(t) or ()) for t in cluster.topics()}
    finally:
        await client.close()


class NotReplayable(Exception):
    """The letter cannot be replayed: its original is gone, or is nothing to send; the message
    says why, naming no value."""


class Originals:
    def __init__(
        self, bootstrap_servers: str, client_options: Mapping[str, Any], timeout_s: float
    ) -> None:
        self._timeout_s = timeout_s
        self._bootstrap_servers = bootstrap_servers
        self._client_options = dict(client_options)
        self._partitions: dict[str, frozenset[int]] | None = None
        self._consumer: AIOKafkaConsumer | None = None  # made by the first letter needing it
        self._partition: TopicPartition | None = None
        self._kept: dict[int, ConsumerRecord[bytes, bytes]] = {}

    async def read(self, source: Source) -> Original:
        """The original at `source`; raises NotReplayable when it is no more."""
        consumer = await self._started()
        tp = TopicPartition(source.topic, source.partition)
        if tp != self._partition:
            await self._check_exists(consumer, tp)
            self._partition, self._kept = tp, {}
        record = self._kept.get(source.offset) or await self._fetch(consumer, tp, source.offset)
        return Original(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            envelope.without_dead_letter_headers(list(record.headers)),
        )

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap_servers,
                client_id=CLIENT_ID,
                enable_auto_commit=False,
                # An offset below the partition's start is an answer (NotReplayable), not a
                # place to jump from.
                auto_offset_reset="none",
                request_timeout_ms=int(self._timeout_s * 1000),
                **self._client_options,
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def _check_exists(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        if self._partitions is None:
            self._partitions = await partitions(
                self._bootstrap_servers, self._client_options, CLIENT_ID
            )
        if tp.topic not in self._partitions:
            raise NotReplayable(f"topic {tp.topic} does not exist any more")
        if tp.partition not in self._partitions[tp.topic]:
            raise NotReplayable(f"{tp.topic} has no partition {tp.partition} any more")
        consumer.assign([tp])

    async def _fetch(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
    ) -> ConsumerRecord[bytes, bytes]:
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if offset < start:
            raise NotReplayable(
                f"removed: {tp.topic}[{tp.partition}] starts at offset {start} now"
                " (the topic's retention, or records deleted)"
            )
        if offset >= end:
            raise NotReplayable(f"{tp.topic}[{tp.partition}] ends before offset {offset} now")
        consumer.seek(tp, offset)
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            try:
                fetched = await consumer.getmany(tp, timeout_ms=500, max_records=_KEPT)
            except OffsetOutOfRangeError:  # retention removed it since the check above
                raise NotReplayable(
                    f"removed: {tp.topic}[{tp.partition}] starts after offset {offset} now"
                ) from None
            except UnicodeDecodeError:
                # A header name that is not UTF-8: aiokafka reads no record of its batch.
                raise NotReplayable(
                    "the Kafka client cannot read it (a header name is not UTF-8)"
                ) from None
            except UnsupportedCodecError as error:
                raise codec_refusal(error, Source(tp.topic, tp.partition, offset)) from None
            records = fetched.get(tp, [])
            if records:
                self._kept = {r.offset: r for r in records}
                if records[0].offset != offset:
                    raise NotReplayable(f"no record at offset {offset} any more (compacted)")
                return records[0]
        raise TimeoutError(f"{tp.topic}[{tp.partition}]@{offset} not read in {self._timeout_s} s")

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def codec_refusal(error: UnsupportedCodecError, source: Source) -> Exception:
    """What aiokafka's refusal of a compressed batch means for the run (see the module)."""
    missing = _LIBRARY_MISSING.search(str(error))
    codec = codec_named(missing.group(1)) if missing else None
    if codec is not None:
        return ConfigError(
            f"{source}: its record batch is compressed with {unreadable_codec(codec)}"
        )
    return NotReplayable(f"the Kafka client cannot read it: {error}")
