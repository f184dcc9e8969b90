"""The recorder against the real broker and database: duplicate delivery and poison records."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from infra.bench.process import HealthClient
from infra.devstack import KafkaBroker, free_port
from recorder_service.settings import DEAD_LETTER_SUFFIX
from recorder_service.settings import Settings as RecorderSettings
from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import RecorderProcess, Stack
from tests.integration.helpers import eventually, group_lag, read_all
from tests.integration.recorder_support import (
    Raw,
    dead_lettered,
    make_event,
    metrics,
    produce,
    raw,
    report,
    stored,
)

GROUP = "delivery-tests"


@pytest.fixture(scope="module")
async def health(stack: Stack, kafka: KafkaBroker) -> AsyncIterator[HealthClient]:
    await kafka.create_topic(stack.topic + DEAD_LETTER_SUFFIX, partitions=3)
    settings = RecorderSettings(
        shared=stack.shared,
        consumer_group=GROUP,
        batch_max_wait_ms=50,
        health_port=free_port(),
    )
    process = RecorderProcess(settings)
    process.start()
    yield HealthClient(settings.health_port)
    await process.stop()


async def drained(stack: Stack, timeout: float = 30) -> int:
    lag = lambda: group_lag(stack.shared.kafka_bootstrap_servers, GROUP, stack.topic)  # noqa: E731
    return await eventually(lag, 0, timeout=timeout)


async def test_the_same_events_produced_twice_are_stored_once(
    stack: Stack, health: HealthClient, db: asyncpg.Pool
) -> None:
    # 150 students with 4 predictions each: profiles change over time, academic records repeat.
    now = int(time.time())
    events = [
        make_event(f"dup-{s}", age=14 + i % 3, gpa=2.0 + i % 2, seconds=now + i)
        for s in range(150)
        for i in range(4)
    ]
    for event in events[::4]:  # and most impute nothing, which the recorder sends as no array
        event.prediction.imputed_fields.append("academic_record.previous_gpa")
    records = [raw(e) for e in events]
    before = await metrics(health)
    await produce(stack.shared.kafka_bootstrap_servers, stack.topic, records)
    await produce(stack.shared.kafka_bootstrap_servers, stack.topic, records)  # the same bytes
    assert await drained(stack) == 0

    ids = [uuid.UUID(e.event_id) for e in events]
    found = await stored(stack.database_url, ids)
    after = await metrics(health)
    redelivered = after["events_already_stored_total"] - before["events_already_stored_total"]
    report(
        "duplicate delivery",
        sent=2 * len(events),
        found=found,
        dead_lettered=dead_lettered(after) - dead_lettered(before),
        distinct_events=len(events),
        kafka_level_duplicates=int(redelivered),
    )
    assert (found.stored, found.duplicates, found.missing) == (600, 0, 0)
    assert redelivered == 600
    imputed = await db.fetch(
        "SELECT prediction_id::text, imputed_fields FROM predictions WHERE prediction_id = ANY($1)",
        ids,
    )
    assert dict(imputed) == {e.event_id: list(e.prediction.imputed_fields) for e in events}

    students = await db.fetch(
        "SELECT student_id, age FROM students WHERE student_id LIKE 'dup-%' ORDER BY student_id"
    )
    assert len(students) == 150
    assert {r["age"] for r in students} == {14}  # each holds its latest profile (i = 3)
    assert (
        await db.fetchval("SELECT count(*) FROM academic_records WHERE student_id LIKE 'dup-%'")
        == 150 * 2
    )
    assert (
        await db.fetchval("SELECT count(*) FROM student_profiles WHERE student_id LIKE 'dup-%'")
        == 150 * 3
    )


def _schema(version: int) -> bytes:
    event = make_event("poison-neighbour")
    event.schema_version = version
    return event.SerializeToString()


def _far_future() -> PredictionEvent:
    event = make_event("poison-time")
    event.occurred_at.seconds = 10**13
    return event


async def test_poison_goes_to_the_dead_letter_topic_and_its_neighbours_are_stored(
    stack: Stack, health: HealthClient
) -> None:
    key = b"poison-neighbour"  # one key: one partition, in this order
    valid = [make_event("poison-neighbour", gpa=i / 10) for i in range(7)]
    poison = {
        "garbage": (Raw(key, b"\x00not protobuf"), "undecodable"),
        "schema 99": (Raw(key, _schema(99)), "unknown-schema-version"),
        "header v2": (
            Raw(key, raw(valid[0]).value, [("schema-version", b"2")]),
            "unknown-schema-version",
        ),
        "age 5": (Raw(key, raw(make_event("poison-age", age=5)).value), "constraint-violation"),
        "time": (Raw(key, raw(_far_future()).value), "invalid-event"),
        "long model": (
            Raw(key, raw(make_event("poison-model", model_version="m" * 200)).value),
            "constraint-violation",
        ),
    }
    records: list[Raw] = []
    for i, event in enumerate(valid):
        records.append(Raw(key, raw(event).value, raw(event).headers))
        if i < len(poison):
            records.append(list(poison.values())[i][0])
    positions = await produce(stack.shared.kafka_bootstrap_servers, stack.topic, records)
    assert await drained(stack) == 0  # the consumer did not stall on them

    found = await stored(stack.database_url, [uuid.UUID(e.event_id) for e in valid])
    letters = await read_all(stack.shared.kafka_bootstrap_servers, stack.topic + DEAD_LETTER_SUFFIX)
    mine = [r for r in letters if r.key == key]
    report("poison", sent=len(records), found=found, dead_lettered=len(mine), valid=len(valid))
    assert (found.stored, found.missing, found.duplicates) == (7, 0, 0)

    expected = {(positions[2 * i + 1], reason) for i, (_, reason) in enumerate(poison.values())}
    got = set()
    for letter in mine:
        h = {name: value.decode() for name, value in letter.headers}
        assert h[envelope.DEAD_LETTER_SOURCE_TOPIC_HEADER] == stack.topic
        assert h[envelope.DEAD_LETTER_ERROR_HEADER]
        assert int(h[envelope.DEAD_LETTER_ATTEMPTS_HEADER]) >= 1
        source = (
            int(h[envelope.DEAD_LETTER_SOURCE_PARTITION_HEADER]),
            int(h[envelope.DEAD_LETTER_SOURCE_OFFSET_HEADER]),
        )
        got.add((source, h[envelope.DEAD_LETTER_REASON_HEADER]))
        assert letter.value == records[positions.index(source)].value  # kept unchanged
    assert got == expected and len(mine) == len(expected)
