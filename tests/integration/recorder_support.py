"""What the recorder's integration tests share: events, load, subprocess recorders, counts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from infra.devstack import free_port
from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Prediction
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

REPO = Path(__file__).resolve().parents[2]


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


@dataclass(frozen=True)
class Raw:
    """A record as produced: anything, including what is not an event."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def raw(event: PredictionEvent) -> Raw:
    record = envelope.encode(event)
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


async def read_all(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record the topic holds right now."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        found: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 20
        while True:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                return found
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += records
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Stored:
    stored: int  # distinct sent predictions found in the table
    rows: int  # rows holding them
    missing: int

    @property
    def duplicates(self) -> int:
        return self.rows - self.stored


async def stored(dsn: str, ids: Sequence[uuid.UUID]) -> Stored:
    """How many of `ids` are in `predictions`, on a fresh connection (pools may hold
    connections a database restart killed)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(DISTINCT prediction_id) AS stored, count(*) AS rows FROM predictions"
            " WHERE prediction_id = ANY($1::uuid[])",
            list(ids),
        )
    finally:
        await conn.close()
    return Stored(row["stored"], row["rows"], len(set(ids)) - row["stored"])


async def wait_stored(dsn: str, ids: Sequence[uuid.UUID], timeout: float) -> Stored:
    deadline = time.monotonic() + timeout
    while True:
        found = await stored(dsn, ids)
        if found.missing == 0 or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def report(test: str, *, sent: int, found: Stored, dead_lettered: int, **more: object) -> None:
    extra = "".join(f" / {name.replace('_', ' ')} {value}" for name, value in more.items())
    print(
        f"\n[{test}] sent {sent} / stored {found.stored} / missing {found.missing} / "
        f"duplicates {found.duplicates} / dead-lettered {dead_lettered}{extra}",
        flush=True,
    )


class Health:
    """A client of a recorder's /health and /metrics endpoint."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    async def get(self, path: str) -> tuple[int, str]:
        return await asyncio.to_thread(self._get, path)

    async def metrics(self) -> dict[str, float]:
        _, text = await self.get("/metrics")
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name.removeprefix("studentperf_recorder_")] = float(value)
        return values


def dead_lettered(metrics: dict[str, float]) -> int:
    return int(sum(v for k, v in metrics.items() if k.startswith("dead_lettered_total")))


class RecorderSubprocess(Health):
    """`python -m recorder_service` with its own environment, health port and log file."""

    def __init__(self, log_dir: Path, name: str, env: dict[str, str]) -> None:
        super().__init__(free_port())
        self.name = name
        self.log_path = log_dir / f"recorder-{name}.log"
        self._env = {
            **os.environ,
            **env,
            "STUDENTPERF_RECORDER_HEALTH_PORT": str(self.port),
            "STUDENTPERF_BATCH_MAX_WAIT_MS": "50",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "recorder_service"],
                cwd=REPO,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_running(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                if (await self.get("/health"))[0] == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                f"recorder {self.name} not running\n{self.log_tail()}"
            )
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (SIGKILL after `timeout`)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
