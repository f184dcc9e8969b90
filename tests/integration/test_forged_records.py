"""Forged records under load: the recorder stays up, stores the good, dead-letters the bad.

Any producer can write anything into the topic. Records with null header values, garbage,
unknown schemas, impossible times, values the database or its driver refuses and records too
large for the dead-letter topic are produced between a steady stream of good events. Each bad
one must be dead-lettered, with the reason expected for it, and no dead-letter header or log
line may quote the student data it carried. Below the recorder, the store refuses alone a row
its driver cannot encode, and takes a database that refuses even an empty batch for an outage.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from infra.devstack import KafkaBroker, PostgresServer
from recorder_service.dead_letters import OMITTED_HEADER
from recorder_service.rows import STAGING_COLUMNS, StagingRow, staging_row
from recorder_service.service import run as run_recorder
from recorder_service.settings import DEAD_LETTER_SUFFIX
from recorder_service.settings import Settings as RecorderSettings
from recorder_service.store import DatabaseUnusable, PostgresStore
from recorder_service.triage import Reason
from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import Stack
from tests.integration.helpers import eventually, read_all
from tests.integration.raw_batches import RawRecord, produce_batch
from tests.integration.recorder_support import Load, letter_source, make_event, wait_stored

# In every forged student id: a dead-letter header or log line holding it quotes student data.
SECRET = "Zq7secret"
# The dead-letter topic takes less than the main topic, as a deployment may configure it.
DEAD_LETTER_MAX_BYTES = 200_000
Header = tuple[str, bytes | None]


@dataclass(frozen=True)
class Forged:
    name: str
    key: bytes | None
    value: bytes | None
    headers: list[Header] = field(default_factory=list)
    reason: str | None = None  # None: a good event in odd wrapping, to be stored
    error_names: str = ""  # what the dead-letter-error header must name
    omitted: bytes | None = None  # what the dead letter had to leave out


def event(name: str, change: Callable[[PredictionEvent], object] = lambda e: None) -> bytes:
    made = make_event(f"{SECRET}-{name}")
    change(made)
    return made.SerializeToString()


def with_headers(*headers: Header) -> list[Header]:
    return [("schema-version", b"1"), *headers]


def _nan_score(e: PredictionEvent) -> None:
    e.prediction.predicted_final_score = float("nan")


def _set(path: str, value: object) -> Callable[[PredictionEvent], None]:
    def change(e: PredictionEvent) -> None:
        *parents, name = path.split(".")
        target = e
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return change


def forged_records() -> list[Forged]:
    secret = SECRET.encode()
    good = event("null-trace")
    return [
        Forged("null trace-id", secret, good, with_headers(("trace-id", None))),
        Forged(
            "repeated and binary headers",
            secret,
            event("dup-headers"),
            [
                ("schema-version", b"1"),
                ("schema-version", b"1"),
                ("content-type", None),
                ("trace-id", b"\xff" * 32),
                ("x-binary", b"\x00\xff" + secret),
            ],
        ),
        Forged(
            "null schema-version",
            secret,
            event("null-schema"),
            [("schema-version", None)],
            "unknown-schema-version",
        ),
        Forged("garbage, no key", None, b"\x00\xff" + secret, reason="undecodable"),
        Forged("empty value", secret, b"", reason="undecodable"),
        Forged("null value", secret, None, [("trace-id", None)], reason="undecodable"),
        Forged(
            "schema 7",
            secret,
            event("schema-7", _set("schema_version", 7)),
            reason="unknown-schema-version",
        ),
        Forged(
            "event id not a UUID",
            secret,
            event("bad-id", _set("event_id", f"{SECRET}-id")),
            reason="undecodable",
        ),
        Forged(
            "time out of range",
            secret,
            event("time", _set("occurred_at.seconds", 10**13)),
            reason="invalid-event",
        ),
        Forged(
            "age 5",
            secret,
            event("age-5", _set("input.profile.age", 5)),
            reason="constraint-violation",
            error_names="_age_check",
        ),
        Forged(
            "a term that breaks the term rule",
            secret,
            event("bad-term", _set("prediction.term", f"2026-{SECRET}")),
            reason="constraint-violation",
            error_names="predictions_term_check",
        ),
        Forged(
            "unknown gender number",
            secret,
            event("gender-99", _set("input.profile.gender", 99)),
            reason="constraint-violation",
            error_names="_gender_check",
        ),
        Forged(
            "NaN score",
            secret,
            event("nan", _nan_score),
            reason="constraint-violation",
            error_names="predictions_predicted_final_score_check",
        ),
        Forged(
            "age 40000",
            secret,
            event("age-40000", _set("input.profile.age", 40_000)),
            reason="invalid-data",
        ),
        Forged(
            "NUL in student id",
            secret,
            event("nul", _set("input.profile.student_id", f"{SECRET}\x00nul")),
            reason="invalid-data",
        ),
        Forged(
            "larger than the dead-letter topic takes",
            None,
            b"\x00" + secret * (300_000 // len(secret)),
            reason="undecodable",
            omitted=b"value",
        ),
        Forged(
            "larger than the dead-letter producer sends",
            None,
            b"\x00" + secret * (1_048_250 // len(secret)),
            reason="undecodable",
            omitted=b"value",
        ),
    ]


def count_logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    return probe


async def produce_one(producer: AIOKafkaProducer, topic: str, forged: Forged) -> tuple[int, int]:
    metadata = await (
        await producer.send(topic, key=forged.key, value=forged.value, headers=forged.headers)
    )
    return metadata.partition, metadata.offset


@pytest.fixture(scope="module")
async def dead_letter_topic(stack: Stack, kafka: KafkaBroker) -> str:
    topic = stack.topic + DEAD_LETTER_SUFFIX
    await kafka.create_topic(
        topic, partitions=3, configs={"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)}
    )
    return topic


async def test_forged_records_under_load_are_dead_lettered_and_the_recorder_stays_up(
    stack: Stack, dead_letter_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bootstrap = stack.shared.kafka_bootstrap_servers
    settings = RecorderSettings(
        shared=stack.shared, consumer_group="forged-records", batch_max_wait_ms=50
    )
    stop = asyncio.Event()
    recording = asyncio.create_task(run_recorder(settings, stop))
    load = Load(bootstrap, stack.topic, per_second=400)
    load.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    forged = forged_records() * 2
    positions: list[tuple[int, int]] = []
    try:
        for record in forged:  # between the load's good events
            positions.append(await produce_one(producer, stack.topic, record))
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
        good = await load.stop()

    bad = [(pos, f) for pos, f in zip(positions, forged, strict=True) if f.reason is not None]
    good_forged = [
        uuid.UUID(PredictionEvent.FromString(f.value or b"").event_id)
        for f in forged
        if f.reason is None
    ]
    found = await wait_stored(stack.database_url, [*good, *good_forged], timeout=90)
    # Logged when a batch's letters are acknowledged, one line per bad record.
    logged_letters = count_logged(caplog, "dead-lettered ")
    assert await eventually(logged_letters, len(bad), timeout=60) == len(bad)
    running = not recording.done()
    letters = await read_all(bootstrap, dead_letter_topic)
    stop.set()
    recorder = await asyncio.wait_for(recording, 30)

    by_source: dict[tuple[int, int], list[dict[str, bytes | None]]] = {}
    for letter in letters:
        h = dict(letter.headers)
        by_source.setdefault(letter_source(h), []).append(h)
    reasons = Counter(f.reason for _, f in bad)
    print(
        f"\n[forged records] good sent {len(good) + len(set(good_forged))}"
        f" (of them forged but good {len(set(good_forged))}) / stored {found.stored}"
        f" / missing {found.missing} / duplicates {found.duplicates}"
        f" / forged bad {len(bad)} / dead-lettered {len(by_source)}"
        f" (copies {len(letters) - len(by_source)})"
        f" / by reason {dict(sorted(recorder.health.dead_lettered.items()))}"
        f" / recorder running {running}",
        flush=True,
    )
    assert running
    assert (found.missing, found.duplicates) == (0, 0)
    assert dict(recorder.health.dead_lettered) == dict(reasons)
    # Every bad record has its letter, no other record has one. A dead-letter send that is
    # retried may add a copy of a letter (documented: the source coordinates tell them apart).
    assert set(by_source) == {pos for pos, _ in bad}
    for pos, f in bad:
        for h in by_source[pos]:
            assert_letter(f, h)
    logged = [r.getMessage() for r in caplog.records]
    assert not [line for line in logged if SECRET in line or "Failing row" in line]
    assert sum("dead-lettered " in line for line in logged) == len(bad)


def assert_letter(f: Forged, h: dict[str, bytes | None]) -> None:
    assert h[envelope.DEAD_LETTER_REASON_HEADER] == (f.reason or "").encode(), f.name
    assert f.error_names.encode() in (h[envelope.DEAD_LETTER_ERROR_HEADER] or b""), f.name
    assert h.get(OMITTED_HEADER) == f.omitted, f.name
    for name, value in h.items():
        if name.startswith("dead-letter-"):
            assert SECRET.encode() not in (value or b""), (f.name, name)
            assert b"Failing row" not in (value or b""), (f.name, name)


def staging(event: PredictionEvent, seq: int, **values: object) -> StagingRow:
    row = list(staging_row(event, seq))
    for name, value in values.items():
        row[STAGING_COLUMNS.index(name)] = value
    return tuple(row)


async def test_a_row_the_driver_cannot_encode_is_refused_alone(
    stack: Stack, db: asyncpg.Pool
) -> None:
    events = [make_event(f"encode-{i}") for i in range(5)]
    rows = [staging(e, i) for i, e in enumerate(events)]
    rows[3] = staging(events[3], 3, age=2**40)  # asyncpg: OverflowError, before PostgreSQL
    result = await PostgresStore(db).write(rows)
    print(
        f"\n[driver refusal] rows {len(rows)} / stored {result.stored}"
        f" / refused {[(r.index, r.reason.value, r.error) for r in result.refused]}"
        f" / transactions {result.transactions}"
    )
    assert [(r.index, r.reason, r.error) for r in result.refused] == [
        (3, Reason.INVALID_DATA, "OverflowError")
    ]
    assert result.stored == 4
    ids = [uuid.UUID(e.event_id) for i, e in enumerate(events) if i != 3]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1::uuid[])", ids
        )
        == 4
    )


async def test_a_database_that_refuses_every_batch_is_an_outage_not_poison(
    postgres: PostgresServer,
) -> None:
    name = f"nomigrations{uuid.uuid4().hex[:8]}"
    await postgres.ensure_database(name)  # no tables: every write fails, no row is at fault
    pool = await asyncpg.create_pool(postgres.dsn(name), min_size=1, max_size=1)
    try:
        with pytest.raises(DatabaseUnusable, match="UndefinedTableError, sqlstate 42P01"):
            await PostgresStore(pool).write([staging(make_event("unusable"), 0)])
    finally:
        await pool.close()


async def test_a_record_with_neither_key_nor_value_is_dead_lettered_and_recording_goes_on(
    stack: Stack, dead_letter_topic: str
) -> None:
    # Kafka takes a record with neither key nor value (a topic that is not compacted; any
    # client but aiokafka's producer writes one), and it is undecodable: its letter must go
    # out in some form, or the batch waits for the dead-letter topic for ever.
    bootstrap = stack.shared.kafka_bootstrap_servers
    events = [make_event(f"{SECRET}-around-nothing-{i}") for i in range(3)]
    kept = [envelope.encode(e) for e in events]
    raw = [RawRecord(r.key, r.value, [(k.encode(), v) for k, v in r.headers]) for r in kept]
    offsets = await produce_batch(
        bootstrap, stack.topic, 0, [raw[0], RawRecord(None, None), raw[1]]
    )
    settings = RecorderSettings(
        shared=stack.shared, consumer_group=f"nothing-{uuid.uuid4().hex[:6]}", batch_max_wait_ms=50
    )
    stop = asyncio.Event()
    recording = asyncio.create_task(run_recorder(settings, stop))
    try:
        await asyncio.sleep(3)  # the first batch is read (and its letter sent, or not)
        await produce_batch(bootstrap, stack.topic, 0, [raw[2]])  # a later batch
        found = await wait_stored(
            stack.database_url, [uuid.UUID(e.event_id) for e in events], timeout=30
        )
        letters = [
            dict(letter.headers)
            for letter in await read_all(bootstrap, dead_letter_topic)
            if dict(letter.headers).get(envelope.DEAD_LETTER_SOURCE_TOPIC_HEADER)
            == stack.topic.encode()
        ]
        from_nothing = [
            h
            for h in letters
            if h[envelope.DEAD_LETTER_SOURCE_PARTITION_HEADER] == b"0"
            and h[envelope.DEAD_LETTER_SOURCE_OFFSET_HEADER] == str(offsets[1]).encode()
        ]
    finally:
        stop.set()
        recorder = await asyncio.wait_for(recording, 30)
    print(
        f"\n[neither key nor value] good sent {len(events)} / stored {found.stored}"
        f" / missing {found.missing} / its letters {len(from_nothing)}"
        f" / retries {recorder.health.retries}"
    )
    assert found.missing == 0, "events after it are never stored: the recorder waits for ever"
    assert from_nothing and from_nothing[0][envelope.DEAD_LETTER_REASON_HEADER] == b"undecodable"
