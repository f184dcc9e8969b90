"""What the recorder's loop needs from Kafka, the database and the dead-letter topic.

The real ones are aiokafka's consumer, store.PostgresStore and dead_letters.KafkaDeadLetters;
the unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka import TopicPartition

from recorder_service.batching import Chunk
from recorder_service.dead_letters import DeadLetter
from recorder_service.erasure import Erasure, Named
from recorder_service.rows import StagingRow
from recorder_service.sharding import Turn
from recorder_service.store import WriteResult


class Consumer(Protocol):
    """The part of AIOKafkaConsumer the recorder uses."""

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Chunk: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> set[TopicPartition]: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
    async def committed(self, partition: TopicPartition) -> int | None: ...
    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]: ...
    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...


class Store(Protocol):
    def turn(self, given_up: Callable[[], bool] = ...) -> Turn: ...
    async def write(
        self,
        rows: Sequence[StagingRow],
        erasures: Sequence[Erasure] = (),
        turn: Turn | None = None,
        named: Sequence[Named] = (),
    ) -> WriteResult: ...


class DeadLetterSink(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None: ...
