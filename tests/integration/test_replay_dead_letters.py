"""Replaying dead letters (recorder_service/replay_dead_letters.py) against a real recorder.

Events from the future are dead-lettered by a recorder (`future-event`), one of them too large
for the dead-letter topic, so that its letter goes without its value. The replay puts the
originals back into the main topic; a recorder whose skew setting is then raised (the cause
removed) stores them, once. Around that: a dry run changes nothing, a replay whose records the
topic refuses commits nothing, a second replay replays nothing; an erased student's letter is
skipped, a letter whose original is gone is reported, a filtered letter is left for later.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import aiokafka.codec
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from infra.devstack import KafkaBroker, PostgresServer
from recorder_service import replay_dead_letters
from recorder_service.dead_letters import OMITTED_HEADER
from recorder_service.letters import Source
from recorder_service.originals import Originals
from recorder_service.replay_dead_letters import replay, replay_group
from recorder_service.replay_report import Outcome, Tally
from recorder_service.settings import DEAD_LETTER_SUFFIX
from recorder_service.settings import Settings as RecorderSettings
from studentperf import envelope
from studentperf.config import ConfigError, DatabaseRole, SharedSettings
from studentperf.v1.erasure_event_pb2 import ErasureEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import (
    RecorderProcess,
    Stack,
    fresh_topic_and_database,
)
from tests.integration.helpers import eventually, group_lag, read_all, run_module
from tests.integration.recorder_support import (
    Raw,
    group_offsets,
    letter_source,
    make_event,
    produce,
    raw,
    stored,
    topic_ends,
)
from tests.integration.test_compressed_batches import send_compressed

# The dead-letter topic takes less than the main topic: a letter of BIG goes without its value.
LETTERS_MAX_BYTES = 4_000
BIG = 12_000
DAY = 24 * 3600


async def own_stack(kafka: KafkaBroker, postgres: PostgresServer, stack: Stack, name: str) -> Stack:
    """A topic, dead-letter topic and database of the test's own. The dead-letter topic has one
    partition: its letters are in the order the recorder sent them, at offsets 0, 1, ..."""
    topic = await fresh_topic_and_database(kafka, postgres, name)
    await kafka.create_topic(
        topic + DEAD_LETTER_SUFFIX,
        partitions=1,
        configs={"max.message.bytes": str(LETTERS_MAX_BYTES)},
    )
    shared = SharedSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_topic=topic,
        database_url=postgres.dsn(topic),
    )
    return Stack(kafka, shared, stack.model_path)


def future(student_id: str) -> PredictionEvent:
    """A prediction a day ahead of the clock: dead-lettered under the default skew of 300 s."""
    return make_event(student_id, seconds=int(datetime.now(UTC).timestamp()) + DAY)


def padded(event: PredictionEvent) -> Raw:
    """The event with BIG bytes of a field this schema does not know (read, and ignored)."""
    record = raw(event)
    field = varint(1000 << 3 | 2) + varint(BIG)  # field 1000, length-delimited
    return replace(record, value=(record.value or b"") + field + b"p" * BIG)


def varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append(0x80 | number & 0x7F)
        number >>= 7
    return bytes([*out, number])


async def record_until_done(own: Stack, group: str, letters: int, **settings: object) -> None:
    """A recorder of group `group` until it has committed the topic's end and the dead-letter
    topic holds letters of `letters` records (and perhaps copies: a batch whose letters were
    not all acknowledged sends them again)."""
    recorder = RecorderProcess(
        RecorderSettings(
            shared=own.shared_as(DatabaseRole.RECORDER),
            batch_max_wait_ms=50,
            consumer_group=group,
        )
    )
    recorder.start(**settings)
    bootstrap = own.shared.kafka_bootstrap_servers
    try:
        assert await eventually(partial(lag, bootstrap, group, own.topic), 0, 60) == 0
        assert await eventually(partial(count_letters, own), letters, 30) == letters
    finally:
        await recorder.stop()


async def lag(bootstrap: str, group: str, topic: str) -> int:
    try:
        return await group_lag(bootstrap, group, topic)
    except KafkaError:  # a broker just started has no group coordinator yet
        return -1


async def count_letters(own: Stack) -> int:
    return len({source for _, source, _ in await read_letters(own)})


async def read_letters(own: Stack) -> list[tuple[int, tuple[int, int], bytes | None]]:
    """Each letter's offset, its original's (partition, offset), and what it omitted."""
    topic = own.topic + DEAD_LETTER_SUFFIX
    return [
        (r.offset, letter_source(dict(r.headers)), dict(r.headers).get(OMITTED_HEADER))
        for r in await read_all(own.shared.kafka_bootstrap_servers, topic)
    ]


def replayer(own: Stack) -> RecorderSettings:
    return RecorderSettings(shared=own.shared_as(DatabaseRole.ANALYST))


async def records_after(own: Stack, ends: dict[int, int]) -> list[ConsumerRecord[bytes, bytes]]:
    """The main topic's records past `ends`: those the replays sent."""
    every = await read_all(own.shared.kafka_bootstrap_servers, own.topic)
    return [r for r in every if r.offset >= ends.get(r.partition, 0)]


async def set_max_bytes(bootstrap: str, topic: str, max_bytes: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(max_bytes)}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()


def letter_source_of(
    letters: Sequence[tuple[int, tuple[int, int], bytes | None]], offset: int
) -> tuple[int, int]:
    return next(source for at, source, _ in letters if at == offset)


def as_sent(records: Sequence[Raw], positions: Sequence[tuple[int, int]]) -> dict[bytes, tuple]:  # type: ignore[type-arg]
    """key -> (partition, value, headers) of what was produced."""
    return {
        r.key or b"": (partition, r.value, [(k, v) for k, v in r.headers])
        for r, (partition, _) in zip(records, positions, strict=True)
    }


async def test_letters_replayed_after_the_fix_are_stored_once_and_a_second_replay_sends_none(
    kafka: KafkaBroker, postgres: PostgresServer, stack: Stack
) -> None:
    own = await own_stack(kafka, postgres, stack, "replay")
    bootstrap = own.shared.kafka_bootstrap_servers
    events = [future(f"replay-{n}") for n in range(3)]
    big = future("replay-big")
    originals = [*map(raw, events), padded(big)]
    good = make_event("replay-good")
    positions = await produce(bootstrap, own.topic, [*originals, raw(good)])
    ids = [uuid.UUID(e.event_id) for e in [*events, big]]
    await record_until_done(own, "replay-recorder", letters=4)
    # A copy of the first letter, as a recorder makes when it sends a batch's letters again.
    first = (await read_all(bootstrap, own.topic + DEAD_LETTER_SUFFIX))[0]
    await produce(
        bootstrap,
        own.topic + DEAD_LETTER_SUFFIX,
        [Raw(first.key, first.value, list(first.headers))],
    )
    letters = await read_letters(own)
    big_letter = min(offset for offset, _, omitted in letters if omitted == b"value")
    assert letter_source_of(letters, big_letter) == positions[3]  # the big one's letter
    stamped = {r.key: r.timestamp for r in await read_all(bootstrap, own.topic)}

    # A dry run decides, and sends and commits nothing.
    topic_before = await topic_ends(bootstrap, own.topic)
    dry = await replay(replayer(own), Tally(dry_run=True))
    assert dry.by_reason(Outcome.REPLAYED) == {"future-event": 4}
    assert dry.of(Outcome.COPY) == len(letters) - 4 >= 1
    assert await topic_ends(bootstrap, own.topic) == topic_before
    assert await group_offsets(bootstrap, replay_group(replayer(own))) == {}

    # The topic refuses the big original: the group commits nothing from its letter on.
    await set_max_bytes(bootstrap, own.topic, LETTERS_MAX_BYTES)
    failed: KafkaError | None = None
    try:
        await replay(replayer(own), Tally())
    except KafkaError as error:
        failed = error
    assert failed is not None
    committed = (await group_offsets(bootstrap, replay_group(replayer(own)))).get(0, 0)
    assert committed <= big_letter
    await set_max_bytes(bootstrap, own.topic, 1_048_588)

    before_replay = await topic_ends(bootstrap, own.topic)
    done = await replay(replayer(own), Tally())
    left = {source for offset, source, _ in letters if offset >= committed}
    assert done.by_reason(Outcome.REPLAYED) == {"future-event": len(left)}
    assert done.status == 0
    assert await group_offsets(bootstrap, replay_group(replayer(own))) == {0: len(letters)}
    # The originals as they were produced, on the partition of their key, no letter header:
    # those this replay sent (a copy of a letter once), and with the failed one's, every one.
    expected = as_sent(originals, positions[:4])
    sent = await records_after(own, before_replay)
    assert len(sent) == len(left)
    every = await records_after(own, topic_before)
    for record in every:
        assert expected[record.key] == (
            record.partition,
            record.value,
            [(k, v) for k, v in record.headers],
        )
        assert record.timestamp == stamped[record.key]
    assert {r.key for r in every} == set(expected)

    after_replay = await topic_ends(bootstrap, own.topic)
    again = await replay(replayer(own), Tally())
    assert (again.read, again.of(Outcome.REPLAYED)) == (0, 0)
    assert await topic_ends(bootstrap, own.topic) == after_replay

    # The cause removed (a skew of two days), the recorder stores each event once, even those
    # the failed replay sent before the refusal, and letters nothing more.
    await record_until_done(own, "replay-recorder", letters=4, max_future_skew_s=2 * DAY)
    found = await stored(own.database_url, ids)
    assert (found.stored, found.missing, found.duplicates) == (4, 0, 0)
    conn = await asyncpg.connect(own.database_url)
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM predictions WHERE student_id LIKE 'replay-%'"
        )
    finally:
        await conn.close()
    assert rows == 5  # the four replayed and the good one


async def erase(own: Stack, student_id: str) -> None:
    erasure = ErasureEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=str(uuid.uuid4()),
        student_id=student_id,
        requested_by="registrar",
    )
    erasure.occurred_at.FromDatetime(datetime.now(UTC))
    record = envelope.encode_erasure(erasure)
    await produce(
        own.shared.kafka_bootstrap_servers,
        own.topic,
        [Raw(record.key, record.value, record.headers)],
    )


async def delete_before(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(offset)})
    finally:
        await admin.close()


async def run_tool(own: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await run_module(
        "recorder_service.replay_dead_letters",
        *args,
        env={
            "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": own.shared.kafka_bootstrap_servers,
            "STUDENTPERF_KAFKA_TOPIC": own.topic,
            "STUDENTPERF_DATABASE_URL": own.database_url_as(DatabaseRole.ANALYST),
            **env,
        },
    )


async def test_erased_gone_and_filtered_letters_are_skipped_named_and_left(
    kafka: KafkaBroker, postgres: PostgresServer, stack: Stack
) -> None:
    own = await own_stack(kafka, postgres, stack, "replayskip")
    bootstrap = own.shared.kafka_bootstrap_servers
    erased, kept, gone = future("skip-erased"), future("skip-kept"), future("skip-gone")
    garbage = Raw(b"skip-garbage", b"\x00not an event")  # undecodable
    # The garbage's letter first: a replay of future events only is to be held back by it.
    positions = await produce(bootstrap, own.topic, [garbage])
    await record_until_done(own, "skip-recorder", letters=1)
    positions += await produce(bootstrap, own.topic, [raw(erased), raw(kept), padded(gone)])
    await record_until_done(own, "skip-recorder", letters=4)
    # The erasure comes after the letters were sent: they still hold the student's data.
    await erase(own, "skip-erased")
    await record_until_done(own, "skip-recorder", letters=4)
    gone_partition, gone_offset = positions[3]
    await delete_before(bootstrap, own.topic, gone_partition, gone_offset + 1)

    missing = await run_tool(own, **{"STUDENTPERF_DEAD_LETTER_TOPIC": "no-such-topic"})
    assert missing.returncode == 2
    assert "STUDENTPERF_DEAD_LETTER_TOPIC" in missing.stderr

    before = await topic_ends(bootstrap, own.topic)
    filtered = await run_tool(own, "--reason", "future-event")
    assert filtered.returncode == 1  # one letter was not replayable
    assert "future-event" in filtered.stdout
    rows = {line.split()[0]: line.split()[1:] for line in filtered.stdout.splitlines()[2:]}
    # replayed, erased, filtered, not replayable, copies (a letter sent twice: the gone one's
    # copy is not replayable either)
    assert rows["future-event"][:3] == ["1", "1", "0"]
    assert int(rows["future-event"][3]) >= 1
    undecodable = [int(n) for n in rows["undecodable"]]
    assert undecodable[:2] == [0, 0] and undecodable[2] >= 1 and undecodable[3] == 0
    assert f"{own.topic}[{gone_partition}]@{gone_offset}" in filtered.stderr
    assert [r.key for r in await records_after(own, before)] == [b"skip-kept"]

    # The group's offsets stop at the filtered letter, which a run for every reason replays.
    letters = await read_letters(own)
    left = min(offset for offset, source, _ in letters if source == positions[0])
    committed = await group_offsets(bootstrap, replay_group(replayer(own)))
    assert committed.get(0, 0) == left
    rest = await replay(replayer(own), Tally())
    assert rest.by_reason(Outcome.REPLAYED).get("undecodable") == 1
    assert rest.of(Outcome.FILTERED) == 0
    assert await group_offsets(bootstrap, replay_group(replayer(own))) == {0: len(letters)}
    # Never the erased student's record, whatever ran.
    assert b"skip-erased" not in [r.key for r in await records_after(own, before)]


async def test_an_original_whose_codec_library_is_missing_stops_the_run_naming_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every letter of that codec would fail alike: the run stops (exit 2) and says what to
    # install, rather than report each letter not replayable, run after run.
    bootstrap = stack.shared.kafka_bootstrap_servers
    events = [future(f"replay-lz4-{n}") for n in range(5)]
    ((partition, offset), *_) = await send_compressed(bootstrap, stack.topic, 0, "lz4", events)
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)  # what aiokafka sees without it
    originals = Originals(bootstrap, {}, 30.0)
    failed: ConfigError | None = None
    try:
        await originals.read(Source(stack.topic, partition, offset))
    except ConfigError as error:
        failed = error
    finally:
        await originals.close()
    assert failed is not None
    assert str(failed) == (
        f"{stack.topic}[{partition}]@{offset}: its record batch is compressed with lz4,"
        " and its library (cramjam) is not installed: pip install 'studentperf[recorder]'"
        " brings it"
    )


@pytest.mark.parametrize(("method", "answered"), [("commit", 0), ("position", 1)])
async def test_a_commit_or_position_kafka_never_answers_stops_the_run(
    kafka: KafkaBroker,
    postgres: PostgresServer,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    answered: int,
) -> None:
    # aiokafka retries both for as long as the coordinator answers with a retriable error; here
    # the letters' consumer's call never returns after `answered` calls (the start's position).
    own = await own_stack(kafka, postgres, stack, f"replayhang{method}")
    await produce(own.shared.kafka_bootstrap_servers, own.topic, [raw(future("hang"))])
    await record_until_done(own, "hang-recorder", letters=1)
    real = getattr(AIOKafkaConsumer, method)
    calls: list[str] = []

    async def never_after(self: AIOKafkaConsumer, *args: object) -> object:
        calls.append(method)
        if len(calls) <= answered or self._group_id is None:  # the originals' consumer
            return await real(self, *args)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr(AIOKafkaConsumer, method, never_after)
    monkeypatch.setattr(replay_dead_letters, "TIMEOUT_S", 5.0)
    stopped: TimeoutError | None = None
    try:
        await replay(replayer(own), Tally())
    except TimeoutError as error:
        stopped = error
    assert stopped is not None
    assert len(calls) == answered + 1
