"""Recorder throughput: events per second from a topic to committed rows.

The events are produced into a fresh topic (and database) before the recorders start; each
recorder is a real `python -m recorder_service` process. The figure is the event count over
the time from the first partition assignment to the last offset commit, both read from the
recorders' own /metrics, so process start-up and joining the group are not counted; every row
is then counted in the database.

Peers measured in the same run, on the same events: producing them (idempotent, acks=all),
consuming them with aiokafka and nothing else (the ceiling for one Python consumer), and
decoding them into staging rows in-process without a database (the Python work per event).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.bench import Bench, Row
from infra.bench.process import RecorderProcess, peak_rss_mb
from recorder_service.settings import DEAD_LETTER_SUFFIX, Settings
from recorder_service.triage import triage
from studentperf import envelope
from studentperf.enums import CATEGORY_BY_NUMBER
from studentperf.migrate import apply_migrations
from studentperf.persistence import benchmarks
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Prediction
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

CASE = "recorder"
EVENTS, QUICK_EVENTS = 50_000, 2_000
STUDENTS, QUICK_STUDENTS = 5_000, 200
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "4"))
INSTANCES = (1, 2)
TIMEOUT_S = 300.0


def make_events(count: int, students: int, seed: int = 7) -> list[envelope.KafkaRecord]:
    """Events like the service's: a few thousand students, every feature varied, some left
    out (and listed as imputed), each with the trace id of its call (the service gives every
    call one, and the recorder checks and indexes it)."""
    rng = random.Random(seed)
    base = time.time()
    made = []
    for i in range(count):
        pid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        profile = StudentProfile(student_id=f"bench-{rng.randrange(students)}")
        record = AcademicRecord()
        imputed = []
        if rng.random() < 0.9:
            profile.age = rng.randint(12, 19)
        else:
            imputed.append("profile.age")
        for name in ("gender", "parental_education", "lunch_program", "test_preparation"):
            setattr(profile, name, rng.choice(list(CATEGORY_BY_NUMBER[name])))
        record.attendance_percentage = round(rng.uniform(50, 100), 1)
        record.study_hours_per_week = round(rng.uniform(0, 30), 1)
        if rng.random() < 0.9:
            record.previous_gpa = round(rng.uniform(1, 4), 2)
        else:
            imputed.append("academic_record.previous_gpa")
        record.assignments_completed = rng.random() < 0.7
        score = rng.uniform(20, 95)
        event = PredictionEvent(
            schema_version=envelope.SCHEMA_VERSION,
            event_id=pid,
            input=Student(profile=profile, academic_record=record),
            prediction=Prediction(
                prediction_id=pid,
                model_version="bench-model-1",
                predicted_final_score=score,
                pass_probability=score / 100,
                predicted_pass=score >= 50,
                pass_mark=50,
                imputed_fields=imputed,
            ),
        )
        event.occurred_at.FromNanoseconds(int((base + i * 1e-4) * 1e9))
        made.append(envelope.encode(event, trace_id=f"{rng.getrandbits(128) | 1:032x}"))
    return made


async def fresh_stack(bench: Bench) -> tuple[str, str]:
    """A new topic (and its dead-letter topic) and a new migrated database."""
    name = f"bench{uuid.uuid4().hex[:10]}"
    await bench.kafka.create_topic(name, PARTITIONS)
    await bench.kafka.create_topic(name + DEAD_LETTER_SUFFIX, PARTITIONS)
    await bench.postgres.ensure_database(name)
    conn = await asyncpg.connect(bench.postgres.dsn(name))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return name, bench.postgres.dsn(name)


async def produce(bench: Bench, topic: str, records: list[envelope.KafkaRecord]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bench.kafka.bootstrap_servers,
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    try:
        started = time.monotonic()
        acks = [
            await producer.send(topic, key=r.key, value=r.value, headers=r.headers) for r in records
        ]
        await asyncio.gather(*acks)
        return time.monotonic() - started
    finally:
        await producer.stop()


async def consume_only(bench: Bench, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bench.kafka.bootstrap_servers,
        group_id=f"bench-consume-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        async with asyncio.timeout(TIMEOUT_S):
            while not consumer.assignment():  # timed, like the recorders, from assignment
                batch = await consumer.getmany(timeout_ms=10)
                seen += sum(len(records) for records in batch.values())
            started = time.monotonic()
            while seen < count:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                seen += sum(len(records) for records in batch.values())
        return time.monotonic() - started
    finally:
        await consumer.stop()


class _Record:
    """Enough of a consumed record for triage()."""

    def __init__(self, offset: int, record: envelope.KafkaRecord) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "bench", 0, offset, 0
        self.key, self.value, self.headers = record.key, record.value, record.headers


def decode_only(records: list[envelope.KafkaRecord]) -> float:
    consumed = [_Record(i, r) for i, r in enumerate(records)]
    started = time.monotonic()
    for i in range(0, len(consumed), 2000):
        triaged = triage(consumed[i : i + 2000])
        assert not triaged.rejected
    return time.monotonic() - started


@dataclass(frozen=True, order=True)
class Run:
    seconds: float  # from the first assignment to the last commit
    batch: float  # mean events per batch
    reread: int  # events written again (after a rebalance); 0 when all members joined at once
    rebalances: int  # assignments beyond each member's first
    peak_mb: float = 0.0  # the largest recorder's peak RSS


async def recorders(
    bench: Bench, topic: str, dsn: str, count: int, instances: int, shards: int | None = None
) -> Run:
    """`shards`: STUDENTPERF_RECORDER_WRITE_SHARDS of each recorder (None: the default)."""
    env = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": bench.kafka.bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": topic,
        "STUDENTPERF_DATABASE_URL": dsn,
        "STUDENTPERF_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
        "STUDENTPERF_LOG_LEVEL": "WARNING",
    }
    if shards is not None:
        env["STUDENTPERF_RECORDER_WRITE_SHARDS"] = str(shards)
    running = [
        RecorderProcess(env, bench.work_dir / f"recorder-{topic}-{i}.log") for i in range(instances)
    ]
    for recorder in running:
        recorder.start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            metrics = [await asyncio.to_thread(_metrics, r) for r in running]
            if sum(m.get("events_stored_total", 0) for m in metrics) >= count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"recorders did not store {count} events: {json.dumps(metrics)}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the last commit follows the last write
        metrics = [await asyncio.to_thread(_metrics, r) for r in running]
        peak_mb = max(peak_rss_mb(r.pid) for r in running)
    finally:
        for r in running:
            r.stop()
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval(benchmarks.COUNT_PREDICTIONS)
    finally:
        await conn.close()
    if rows != count:
        raise RuntimeError(f"{rows} rows stored for {count} events")
    first = min(m["first_assigned_timestamp_seconds"] for m in metrics if m)
    last = max(m["last_commit_timestamp_seconds"] for m in metrics if m)
    total = {
        name: int(sum(m[name] for m in metrics if m))
        for name in ("batches_total", "events_already_stored_total", "rebalances_total")
    }
    return Run(
        last - first,
        count / max(total["batches_total"], 1),
        total["events_already_stored_total"],
        total["rebalances_total"] - instances,
        peak_mb,
    )


def _metrics(recorder: RecorderProcess) -> dict[str, float]:
    try:
        return recorder.metrics()
    except OSError:  # not listening yet
        return {}


async def run(bench: Bench) -> list[Row]:
    count = QUICK_EVENTS if bench.quick else EVENTS
    records = make_events(count, QUICK_STUDENTS if bench.quick else STUDENTS)
    consume_label = "kafka consume only, 1 consumer"
    topic, _ = await fresh_stack(bench)
    rows = [
        Row(CASE, "produce (idempotent, acks=all)", count, await produce(bench, topic, records))
    ]
    rows.append(Row(CASE, consume_label, count, await consume_only(bench, topic, count)))
    rows.append(Row(CASE, "decode to staging rows only, no DB", count, decode_only(records)))
    # The one-shard recorder (the writer before sharding) runs interleaved with the default,
    # on the same events, so a busy moment of the shared machine hits both alike.
    cases = [(1, 1), (1, None)] + ([] if bench.quick else [(n, None) for n in INSTANCES[1:]])
    runs: dict[tuple[int, int | None], list[Run]] = {case: [] for case in cases}
    for _ in range(bench.repeat):
        for instances, shards in cases:
            topic, dsn = await fresh_stack(bench)
            await produce(bench, topic, records)
            runs[instances, shards].append(
                await recorders(bench, topic, dsn, count, instances, shards)
            )
    for (instances, shards), done in runs.items():
        median = sorted(done)[len(done) // 2]
        note = (
            f"{PARTITIONS} partitions, {median.batch:,.0f} events per batch, "
            f"peak RSS {max(r.peak_mb for r in done):.0f} MiB (target < 200 MB)"
        )
        if median.reread or median.rebalances:
            note += f", {median.rebalances} rebalances, {median.reread:,} events re-read"
        if len(done) > 1:
            note += ", median of " + " / ".join(f"{count / r.seconds:,.0f}" for r in done)
        label = f"topic -> committed rows, {instances} recorder{'s' if instances > 1 else ''}"
        if instances == 1:
            count_of = shards or Settings.write_shards
            label += f", {count_of} write shard{'s' if count_of > 1 else ''}"
            label += "" if shards else " (default)"
        rows.append(Row(CASE, label, count, median.seconds, peer=consume_label, note=note))
    return rows
