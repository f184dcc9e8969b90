"""Stand-ins for the recorder's Kafka consumer, store and dead-letter topic (no network)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from recorder_service.dead_letters import DeadLetter
from recorder_service.erasure import Erasure, Named
from recorder_service.rows import StagingRow
from recorder_service.sharding import ShardTurns, Turn
from recorder_service.store import Refusal, WriteResult
from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Prediction
from studentperf.v1.student_pb2 import Student, StudentProfile

TOPIC = "events"


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = b"k"
    timestamp: int = 1_700_000_000_000
    headers: Sequence[tuple[str, bytes | None]] = ()


def event_bytes(student_id: str = "s-1") -> bytes:
    pid = str(uuid.uuid4())
    event = PredictionEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=pid,
        input=Student(profile=StudentProfile(student_id=student_id)),
        prediction=Prediction(prediction_id=pid, model_version="v1"),
    )
    event.occurred_at.seconds = 1_700_000_000
    return event.SerializeToString()


def records(partition: int, values: Sequence[bytes], first_offset: int = 0) -> list[FakeRecord]:
    return [FakeRecord(TOPIC, partition, first_offset + i, v) for i, v in enumerate(values)]


class FakeConsumer:
    """Hands out queued chunks, one per getmany, honouring pause(); records every call."""

    def __init__(self, *chunks: dict[TopicPartition, list[FakeRecord]], partitions: int = 2):
        self.chunks = list(chunks)
        self.assigned = {TopicPartition(TOPIC, p) for p in range(partitions)}
        self.paused_tps: set[TopicPartition] = set()
        self.calls: list[str] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        # Only the recovery from an unreadable record (polling.py) names partitions.
        assert not partitions, "FakeConsumer hands out whole chunks"
        if self.chunks and not (set(self.chunks[0]) & self.paused_tps):
            chunk, limit = self.chunks.pop(0), max_records or 10**9
            given: dict[TopicPartition, list[FakeRecord]] = {}
            rest: dict[TopicPartition, list[FakeRecord]] = {}
            for tp, recs in chunk.items():
                given[tp], rest[tp] = recs[:limit], recs[limit:]
                limit -= len(given[tp])
            if any(rest.values()):
                self.chunks.insert(0, {tp: r for tp, r in rest.items() if r})
            return {tp: r for tp, r in given.items() if r}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.calls.append("pause")
        self.paused_tps |= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.calls.append("resume")
        self.paused_tps -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.calls.append("commit")
        self.commits.append(dict(offsets))

    async def committed(self, partition: TopicPartition) -> int | None:
        return None

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)


@dataclass
class FakeStore:
    """Fails `outage` times with a lost connection, refuses rows at `refuse`, else stores.
    Each write takes `delay_s`, or the n-th takes `delays[n - 1]` when that is given; `most_at_once`
    is how many writes were under way at once at most."""

    outage: int = 0
    refuse: set[int] = field(default_factory=set)
    delay_s: float = 0.0
    delays: list[float] = field(default_factory=list)
    calls: list[str] | None = None
    attempts: int = 0
    written: list[StagingRow] = field(default_factory=list)
    # Students taken as erased after every time: their refused records are reported skipped.
    erased: set[str] = field(default_factory=set)
    under_way: int = 0
    most_at_once: int = 0
    _turns: ShardTurns = field(default_factory=lambda: ShardTurns(1))

    def turn(self, given_up: Callable[[], bool] = lambda: False) -> Turn:
        return self._turns.take(given_up)  # the order of shards is the real store's to keep

    async def write(
        self,
        rows: Sequence[StagingRow],
        erasures: Sequence[Erasure] = (),
        turn: Turn | None = None,
        named: Sequence[Named] = (),
    ) -> WriteResult:
        self.attempts += 1
        if self.calls is not None:
            self.calls.append("write")
        attempt = self.attempts
        self.under_way += 1
        self.most_at_once = max(self.most_at_once, self.under_way)
        try:
            await asyncio.sleep(self.delays[attempt - 1] if self.delays else self.delay_s)
        finally:
            self.under_way -= 1
        if attempt <= self.outage:
            raise ConnectionRefusedError("database is away")
        kept = [r for i, r in enumerate(rows) if i not in self.refuse]
        self.written += kept
        refused = [Refusal(i, "CheckViolationError: no", 2) for i in sorted(self.refuse)]
        skipped = {n.index for n in named if n.student_id in self.erased}
        return WriteResult(len(kept), 0, refused, transactions=1, erased_refused=skipped)


@dataclass
class FakeDeadLetters:
    calls: list[str] | None = None
    sent: list[DeadLetter] = field(default_factory=list)

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        if letters and self.calls is not None:
            self.calls.append("dead-letters")
        self.sent += letters
