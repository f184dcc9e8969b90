"""What the recorder's integration tests share: events, load, subprocess recorders, counts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.bench.process import HealthClient, RecorderProcess
from recorder_service.consumer import Recorder
from studentperf import envelope
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Outcome, Prediction
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile
from tests.integration.duplicates import duplicate_child_rows
from tests.integration.helpers import committed_offsets, eventually, read_all

T = TypeVar("T")


def make_event(
    student_id: str,
    *,
    age: int | None = 16,
    gpa: float | None = 3.0,
    seconds: int | None = None,
    model_version: str = "test-model",
) -> PredictionEvent:
    pid = str(uuid.uuid4())
    event = PredictionEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=pid,
        input=Student(
            profile=StudentProfile(student_id=student_id),
            academic_record=AcademicRecord(),
        ),
        prediction=Prediction(
            prediction_id=pid,
            model_version=model_version,
            predicted_final_score=61.5,
            pass_probability=0.7,
            predicted_pass=True,
            pass_mark=50,
        ),
    )
    if age is not None:
        event.input.profile.age = age
    if gpa is not None:
        event.input.academic_record.previous_gpa = gpa
    if seconds is None:
        event.occurred_at.GetCurrentTime()
    else:
        event.occurred_at.seconds = seconds
    return event


def make_outcome_event(student_id: str, term: str, score: float, *, seconds: int) -> OutcomeEvent:
    event = OutcomeEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=str(uuid.uuid4()),
        outcome=Outcome(student_id=student_id, term=term, final_score=score),
    )
    event.occurred_at.seconds = seconds
    return event


@dataclass(frozen=True)
class Raw:
    """A record as produced: anything, including what is not an event."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def raw(event: PredictionEvent) -> Raw:
    record = envelope.encode(event)
    return Raw(record.key, record.value, record.headers)


def raw_outcome(event: OutcomeEvent) -> Raw:
    record = envelope.encode_outcome(event)
    return Raw(record.key, record.value, record.headers)


async def produce(bootstrap: str, topic: str, records: Sequence[Raw]) -> list[tuple[int, int]]:
    """Sends every record, waits for each acknowledgement; (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        acks = [
            await producer.send(topic, key=r.key, value=r.value, headers=r.headers) for r in records
        ]
        metadata = await asyncio.wait_for(asyncio.gather(*acks), 30)
        return [(m.partition, m.offset) for m in metadata]
    finally:
        await producer.stop()


class Load:
    """Produces events at a steady rate in the background; `sent` holds the acknowledged ids."""

    def __init__(self, bootstrap: str, topic: str, *, per_second: int, students: int = 300):
        self._bootstrap = bootstrap
        self._topic = topic
        self._per_tick = max(1, per_second // 20)
        self._students = students
        self.sent: list[uuid.UUID] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[uuid.UUID]:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 30)
        return self.sent

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        try:
            n = 0
            while not self._stop.is_set():
                events = []
                for _ in range(self._per_tick):
                    n += 1
                    events.append(make_event(f"load-{n % self._students}", gpa=(n % 40) / 10))
                acks = []
                for e in events:
                    r = envelope.encode(e)
                    acks.append(
                        await producer.send(
                            self._topic, key=r.key, value=r.value, headers=r.headers
                        )
                    )
                await asyncio.wait_for(asyncio.gather(*acks), 30)
                self.sent += [uuid.UUID(e.event_id) for e in events]
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()


@dataclass(frozen=True)
class Stored:
    stored: int  # sent predictions found in the table
    missing: int
    # Profile and academic-record rows repeating another of the same student's: where a
    # redelivered event could add a second copy (predictions are keyed by their id, so a row
    # count per id is always one; see tests/integration/duplicates.py).
    duplicates: int


async def stored(dsn: str, ids: Sequence[uuid.UUID]) -> Stored:
    """How many of `ids` are in `predictions`, and the duplicate child rows of their students,
    on a fresh connection (pools may hold connections a database restart killed)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT student_id FROM predictions WHERE prediction_id = ANY($1::uuid[])", list(ids)
        )
        found = len(rows)
        duplicates = await duplicate_child_rows(conn, list({r["student_id"] for r in rows}))
    finally:
        await conn.close()
    return Stored(found, len(set(ids)) - found, duplicates)


async def wait_stored(dsn: str, ids: Sequence[uuid.UUID], timeout: float) -> Stored:
    async def missing() -> int:
        return (await stored(dsn, ids)).missing

    await eventually(missing, 0, timeout=timeout)
    return await stored(dsn, ids)


def report(test: str, *, sent: int, found: Stored, dead_lettered: int, **more: object) -> None:
    extra = "".join(f" / {name.replace('_', ' ')} {value}" for name, value in more.items())
    print(
        f"\n[{test}] sent {sent} / stored {found.stored} / missing {found.missing} / "
        f"duplicates {found.duplicates} child rows / dead-lettered {dead_lettered}{extra}",
        flush=True,
    )


def dead_lettered(metrics: dict[str, float]) -> int:
    return int(sum(v for k, v in metrics.items() if k.startswith("dead_lettered_total")))


async def metrics(client: HealthClient) -> dict[str, float]:
    return await asyncio.to_thread(client.metrics)


async def wait_health(client: HealthClient, code: int, timeout: float) -> float:
    """Seconds until the recorder's /health answers `code`."""

    async def probe() -> int:
        try:
            return (await asyncio.to_thread(client.get, "/health"))[0]
        except OSError:  # not listening yet
            return 0

    started = time.monotonic()
    if await eventually(probe, code, timeout=timeout) != code:
        tail = client.log_tail() if isinstance(client, RecorderProcess) else ""
        raise AssertionError(f"/health never answered {code} within {timeout} s\n{tail}")
    return time.monotonic() - started


def recorder_process(log_dir: Path, name: str, env: dict[str, str]) -> RecorderProcess:
    return RecorderProcess(
        {**env, "STUDENTPERF_BATCH_MAX_WAIT_MS": "50"}, log_dir / f"recorder-{name}.log"
    )


# --- a recorder run in the test's event loop, its dead letters and its group's offsets ---


async def unless_ended(recording: asyncio.Task[Recorder], waiting: Awaitable[T]) -> T:
    """What `waiting` returns; the recorder's own error at once if it ends meanwhile."""
    wait = asyncio.ensure_future(waiting)
    await asyncio.wait({wait, recording}, return_when=asyncio.FIRST_COMPLETED)
    if not wait.done():
        wait.cancel()
        recording.result()  # raises what ended the recorder
        raise AssertionError("the recorder stopped by itself")
    return wait.result()


def letter_source(headers: dict[str, bytes | None]) -> tuple[int, int]:
    return (
        int(headers[envelope.DEAD_LETTER_SOURCE_PARTITION_HEADER] or b""),
        int(headers[envelope.DEAD_LETTER_SOURCE_OFFSET_HEADER] or b""),
    )


async def letter_headers(bootstrap: str, topic: str) -> list[dict[str, bytes | None]]:
    return [dict(letter.headers) for letter in await read_all(bootstrap, topic)]


async def wait_committed(
    bootstrap: str, group: str, ends: dict[int, int], timeout: float
) -> dict[int, int]:
    """The group's committed offsets once they are `ends` (or the time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        committed = await group_offsets(bootstrap, group)
        if committed == ends or time.monotonic() > deadline:
            return committed
        await asyncio.sleep(0.2)


async def group_offsets(bootstrap: str, group: str) -> dict[int, int]:
    return {tp.partition: o for tp, o in (await committed_offsets(bootstrap, group)).items()}


async def topic_ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()
