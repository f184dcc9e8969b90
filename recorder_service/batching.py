"""Gathering a batch: records from successive polls until it is full or old enough.

A batch is bounded by count (`max_events`) and by time (`max_wait_s` after its first record
came). It remembers the rebalance epoch its records were fetched in: records fetched before
a rebalance are not this member's to commit any more, and the new assignment reads them
again from the committed offsets, so they are dropped rather than written under a stale claim.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import TopicPartition


class Record(Protocol):
    """What the recorder reads of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    """A record aiokafka cannot read (a header name that is not UTF-8), as read raw (see
    polling.py): the names that are not UTF-8 have their bytes escaped (\\xNN)."""

    topic: str
    partition: int
    offset: int
    error: str  # why it could not be read; names no value
    timestamp: int = -1
    key: bytes | None = None
    value: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


Chunk = Mapping[TopicPartition, Sequence[Record]]


class Poll(Protocol):
    async def __call__(self, *, timeout_ms: int, max_records: int) -> Chunk: ...


@dataclass(slots=True)
class Batch:
    epoch: int
    first_seen_at: datetime
    parts: dict[TopicPartition, list[Record]] = field(default_factory=dict)
    size: int = 0

    def add(self, chunk: Chunk) -> None:
        for tp, records in chunk.items():
            self.parts.setdefault(tp, []).extend(records)
            self.size += len(records)

    def records(self) -> Iterator[Record]:
        """Partition by partition, each in log order (so one student's events stay in order)."""
        for records in self.parts.values():
            yield from records

    def next_offsets(self) -> dict[TopicPartition, int]:
        """What to commit once the batch is written: each partition's last offset + 1."""
        return {tp: records[-1].offset + 1 for tp, records in self.parts.items() if records}


async def collect(
    poll: Poll,
    epoch: Callable[[], int],
    stop: asyncio.Event,
    *,
    max_events: int,
    max_wait_s: float,
    idle_poll_s: float = 0.5,
    interrupted: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> Batch | None:
    """The next batch, or None when `stop` is set (or `interrupted()` is true) before any
    record came. A batch that has begun is returned early when `interrupted()` turns true."""
    batch: Batch | None = None
    deadline = 0.0
    while True:
        if batch is None:
            if stop.is_set() or interrupted():
                return None
            timeout = idle_poll_s
        else:
            timeout = deadline - clock()
            if timeout <= 0 or batch.size >= max_events or stop.is_set() or interrupted():
                return batch
        size = 0 if batch is None else batch.size
        chunk = await poll(timeout_ms=max(0, int(timeout * 1000)), max_records=max_events - size)
        # Read right after the poll returns: the listener bumps the epoch while a rebalance
        # holds the poll, so a chunk and the epoch read here belong to the same assignment.
        now_epoch = epoch()
        if batch is not None and batch.epoch != now_epoch:
            batch = None
        if any(chunk.values()):
            if batch is None:
                batch = Batch(now_epoch, datetime.now(UTC))
                deadline = clock() + max_wait_s
            batch.add(chunk)
