"""Polling that no record can stop: what aiokafka cannot read is read raw instead.

aiokafka (0.14, consumer/fetcher.py and record/_crecords) decodes each header name as UTF-8
while getmany() hands records out, every record of a fetched batch, even those before the
position asked for. A name that is not UTF-8 makes getmany() raise UnicodeDecodeError each time
it reaches that batch, and the call loses what it had gathered: the partition's records before
the bad one (its position stays put), and the records of every partition drained before it in
the same call, whose positions it had already moved past them (they would be skipped for good).
Seeking past the bad record does not help: the rest of its batch fails the same way.

So this remembers, per partition, the offset the recorder gets next. When getmany() raises, it
seeks every assigned partition back there and reads each one once raw (raw_records.py): whole
batches, the bad record handed on as an UnreadableRecord (dead-lettered as `undecodable`, with
its key, value and headers), then seeks past the batches read and goes back to getmany().
A batch compressed with snappy, lz4 or zstd where their library (cramjam, which the recorder
extra installs) is missing, or with a codec aiokafka does not know, makes getmany() raise in
the same way; read raw, its records are handed on as unreadable too. With the library, the raw
read decompresses such a batch as aiokafka does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, UnsupportedCodecError

from recorder_service.batching import Chunk, Record, UnreadableRecord
from recorder_service.ports import Consumer
from recorder_service.raw_records import parse

log = logging.getLogger(__name__)

# How long a raw fetch waits for records at the position.
RAW_WAIT_MS = 500
DEFAULT_MAX_RECORDS = 500  # aiokafka's max_poll_records


class RawFetch(Protocol):
    async def __call__(self, tp: TopicPartition, offset: int, wait_ms: int) -> bytes: ...


class Poller:
    """Polls through `consumer` and seeks for the recorder, tracking where each partition is.

    `epoch()` is the rebalance epoch: a new assignment starts from the committed offsets, so
    what was tracked before it is forgotten."""

    def __init__(
        self,
        consumer: Consumer,
        epoch: Callable[[], int],
        raw_fetch: RawFetch,
        reassigning: Callable[[], bool] = lambda: False,
    ) -> None:
        """`reassigning()`: true from a revocation until the next assignment."""
        self._consumer = consumer
        self._raw_fetch = raw_fetch
        self._epoch = epoch
        self._reassigning = reassigning
        self._tracked_epoch = epoch()
        self._next: dict[TopicPartition, int] = {}
        # Set while positions may be past records never handed on; cleared once they are back.
        self._rewind = False

    async def __call__(self, *, timeout_ms: int, max_records: int) -> Chunk:
        return await self.poll(timeout_ms=timeout_ms, max_records=max_records)

    async def poll(self, *, timeout_ms: int, max_records: int | None = None) -> Chunk:
        if not self._rewind:
            chunk = await self._get_many(timeout_ms, max_records)
            if chunk is not None:
                return chunk
            self._rewind = True
        self._forget_if_reassigned()
        if self._reassigning():
            # From a revocation to the next assignment, the partitions being revoked are not
            # ours to read raw any more. getmany() waits there as always: until the new
            # assignment, or raising what the group's coordination pushed to it (a rejoin that
            # failed), which only a call to it delivers; so it is called, never skipped.
            chunk = await self._get_many(timeout_ms, max_records)
            if chunk is None:
                return {}  # unreadable in the new assignment too: read raw, now it is in place
            # Of the new assignment, which starts at the committed offsets: nothing skipped.
            self._rewind = False
            return chunk
        try:
            ends = await self._seek_back()
            chunk = await self._read_raw(ends, max_records or DEFAULT_MAX_RECORDS)
        except KafkaError as error:
            # The broker is away, or a rebalance took a partition meanwhile (IllegalStateError
            # on seek): the next poll tries again, from where the recorder is.
            log.warning("cannot read raw yet (%s: %s)", type(error).__name__, error)
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        self._rewind = False
        return chunk

    async def _get_many(self, timeout_ms: int, max_records: int | None) -> Chunk | None:
        """aiokafka's getmany(); None when a record it fetched cannot be decoded."""
        try:
            chunk = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except (UnicodeDecodeError, UnsupportedCodecError):
            # UnsupportedCodecError: a batch compressed with a codec whose library is missing
            # raises as a bad name does, with the same losses.
            return None
        self._forget_if_reassigned()
        self._handed_on(chunk)
        return chunk

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(tp, offset)
        self._next[tp] = offset

    def _forget_if_reassigned(self) -> None:
        if self._epoch() != self._tracked_epoch:
            self._tracked_epoch = self._epoch()
            self._next.clear()

    def _handed_on(self, chunk: Chunk) -> None:
        for tp, records in chunk.items():
            if records:
                self._next[tp] = records[-1].offset + 1

    async def _seek_back(self) -> dict[TopicPartition, int]:
        """Seeks every assigned partition to the offset handed on next; each one's end."""
        assigned = sorted(self._consumer.assignment())
        ends = await self._consumer.end_offsets(assigned)
        unknown = [tp for tp in assigned if tp not in self._next]
        firsts = await self._consumer.beginning_offsets(unknown) if unknown else {}
        for tp in assigned:
            offset = self._next.get(tp)
            if offset is None:
                # Nothing handed on since the assignment: it started at the committed offset,
                # or at the earliest one (auto_offset_reset) when none is committed or kept.
                committed = await self._consumer.committed(tp)
                offset = max(firsts[tp], committed if committed is not None else firsts[tp])
            self.seek(tp, offset)
        return ends

    async def _read_raw(self, ends: dict[TopicPartition, int], budget: int) -> Chunk:
        """Each partition's next batches, read raw; nothing if a rebalance comes meanwhile
        (the new assignment starts from the committed offsets)."""
        chunk: dict[TopicPartition, list[Record]] = {}
        for tp in sorted(self._consumer.assignment() - self._consumer.paused()):
            start = self._next.get(tp)
            if self._epoch() != self._tracked_epoch or start is None:
                self._forget_if_reassigned()
                return {}
            if budget <= 0 or start >= ends.get(tp, 0):
                continue  # what comes later comes with getmany()
            data = await self._raw_fetch(tp, start, RAW_WAIT_MS)
            if self._epoch() != self._tracked_epoch:
                self._forget_if_reassigned()
                return {}
            records, after = parse(data, tp, start, budget)
            if after is not None:
                self.seek(tp, after)
            for record in records:
                if isinstance(record, UnreadableRecord):
                    log.error("%s cannot be read by aiokafka: %s", _where(record), record.error)
            if records:
                chunk[tp] = records
                budget -= len(records)
        return chunk


def _where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
