"""Record batches compressed with each of Kafka's codecs: their events are stored like any.

The project's own producers never compress, but any other producer may: a Java client with
compression.type=zstd, a MirrorMaker, a tool. aiokafka reads gzip with the standard library and
snappy, lz4 and zstd with cramjam, which the recorder extra installs. The batches here are
written by aiokafka's producer, or by hand where one of their records has a header name that
is not UTF-8: that sends the recorder to read the batch raw and decompress it itself
(raw_records.py). Where cramjam is missing (a deployment installed without it), neither can
read such a batch: its records are dead-lettered, the codec named, and the records around
them stored. Each test first checks that the log holds its batches compressed as asked.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import aiokafka.codec
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.record.default_records import DefaultRecordBatch

from recorder_service.consumer import Recorder
from recorder_service.dead_letters import OMITTED_HEADER
from recorder_service.raw_records import RawFetcher
from recorder_service.service import run as run_recorder
from recorder_service.settings import DEAD_LETTER_SUFFIX
from recorder_service.settings import Settings as RecorderSettings
from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import Stack
from tests.integration.raw_batches import RawRecord, produce_batch
from tests.integration.recorder_support import (
    Stored,
    letter_headers,
    letter_source,
    make_event,
    stored,
    topic_ends,
    unless_ended,
    wait_committed,
    wait_stored,
)
from tests.integration.test_unreadable_records import bad_name, good

# The codec number a batch's attributes give, by the name aiokafka's producer takes.
CODECS = {
    None: 0,
    "gzip": DefaultRecordBatch.CODEC_GZIP,
    "snappy": DefaultRecordBatch.CODEC_SNAPPY,
    "lz4": DefaultRecordBatch.CODEC_LZ4,
    "zstd": DefaultRecordBatch.CODEC_ZSTD,
}
Offset = tuple[int, int]  # (partition, offset)


async def send_compressed(
    bootstrap: str, topic: str, partition: int, codec: str | None, events: Sequence[PredictionEvent]
) -> list[Offset]:
    """The events as one batch, as aiokafka's producer compresses it; where each went."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, compression_type=codec, enable_idempotence=True
    )
    await producer.start()
    try:
        batch = producer.create_batch()
        for event in events:
            record = envelope.encode(event)
            added = batch.append(
                key=record.key, value=record.value, timestamp=None, headers=record.headers
            )
            assert added is not None, "the batch is full"
        sent = await producer.send_batch(batch, topic, partition=partition)
        base = (await asyncio.wait_for(sent, 30)).offset
    finally:
        await producer.stop()
    return [(partition, base + i) for i in range(len(events))]


async def codecs_in_log(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[Offset, int]:
    """The codec of the batch that holds each record of the topic, as the broker keeps it
    (a producer's compression is kept as sent, unless the topic says otherwise)."""
    fetch = RawFetcher(bootstrap, {})
    found: dict[Offset, int] = {}
    try:
        for partition, end in ends.items():
            offset = 0
            while offset < end:
                data = await fetch(TopicPartition(topic, partition), offset, 100)
                pos, before = 0, offset
                while pos + 12 <= len(data):
                    base, length = struct.unpack_from(">qi", data, pos)
                    if pos + 12 + length > len(data):
                        break
                    (attributes, last_delta) = struct.unpack_from(">hi", data, pos + 21)
                    found |= {
                        (partition, base + i): attributes & 0x07 for i in range(last_delta + 1)
                    }
                    offset, pos = base + last_delta + 1, pos + 12 + length
                assert offset > before, f"no whole batch at {topic}[{partition}] {offset}"
    finally:
        await fetch.close()
    return found


async def written_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """The end of each partition written to (an empty one has no offset to commit)."""
    return {p: end for p, end in (await topic_ends(bootstrap, topic)).items() if end}


class Recorded(NamedTuple):
    found: Stored  # of the ids waited for
    committed: dict[int, int]  # the group's offsets, once at the ends or when the time was up
    recorder: Recorder  # as it stopped


async def record_to_the_ends(
    stack: Stack, group: str, ids: Sequence[uuid.UUID], ends: dict[int, int]
) -> Recorded:
    """Runs a recorder of its own consumer group until `ids` are stored and it has committed
    `ends`, then stops it; the recorder's own error at once if it ends before."""
    settings = RecorderSettings(shared=stack.shared, consumer_group=group, batch_max_wait_ms=50)
    bootstrap = stack.shared.kafka_bootstrap_servers
    stop = asyncio.Event()
    recording = asyncio.create_task(run_recorder(settings, stop))
    try:
        found = await unless_ended(recording, wait_stored(stack.database_url, ids, timeout=60))
        committed = await unless_ended(
            recording, wait_committed(bootstrap, group, ends, timeout=30)
        )
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.wait({recording}), 30)
    return Recorded(found, committed, recording.result())


async def letters_by_source(bootstrap: str, topic: str) -> dict[Offset, dict[str, bytes | None]]:
    """The headers of the dead letters of `topic`'s records, by the record each is of."""
    return {
        letter_source(h): h for h in await letter_headers(bootstrap, topic + DEAD_LETTER_SUFFIX)
    }


async def test_batches_compressed_with_each_codec_are_stored_once(stack: Stack) -> None:
    bootstrap = stack.shared.kafka_bootstrap_servers
    ids: list[uuid.UUID] = []
    sent_with: dict[Offset, int] = {}
    for n, codec in enumerate(CODECS):
        events = [make_event(f"compressed-{codec}-{i}") for i in range(10)]
        ids += [uuid.UUID(e.event_id) for e in events]
        for _ in range(2):  # each batch twice, as a producer's retry or a tool run again sends
            for where in await send_compressed(bootstrap, stack.topic, n % 3, codec, events):
                sent_with[where] = CODECS[codec]
    ends = await written_ends(bootstrap, stack.topic)
    in_log = await codecs_in_log(bootstrap, stack.topic, ends)
    assert {where: in_log[where] for where in sent_with} == sent_with

    found, committed, recorder = await record_to_the_ends(stack, "compressed-batches", ids, ends)
    print(
        f"\n[compressed with each codec] events {len(ids)}, each sent twice"
        f" / stored {found.stored} / missing {found.missing}"
        f" / duplicates {found.duplicates} child rows"
        f" / dead-lettered {dict(recorder.health.dead_lettered)}"
        f" / committed {committed} / ends {ends}"
    )
    assert (found.stored, found.missing, found.duplicates) == (len(ids), 0, 0)
    assert not recorder.health.dead_lettered
    assert committed == ends


async def test_a_compressed_batch_read_raw_is_decompressed_by_the_recorder(stack: Stack) -> None:
    # A header name that is not UTF-8 makes aiokafka give up on its whole batch: the recorder
    # reads it raw and must decompress it itself, with the same codecs.
    bootstrap = stack.shared.kafka_bootstrap_servers
    good_ids: list[uuid.UUID] = []
    bad: set[Offset] = set()
    sent_with: dict[Offset, int] = {}
    for n, codec in enumerate(["gzip", "snappy", "lz4", "zstd"]):
        made = [good(f"raw-{codec}-{i}") for i in range(4)]
        good_ids += [event_id for event_id, _ in made]
        records: list[RawRecord] = [record for _, record in made]
        records.insert(2, bad_name(f"raw-{codec}-bad"))
        offsets = await produce_batch(bootstrap, stack.topic, n % 3, records, codec=CODECS[codec])
        sent_with |= dict.fromkeys([(n % 3, o) for o in offsets], CODECS[codec])
        bad.add((n % 3, offsets[2]))
    ends = await written_ends(bootstrap, stack.topic)
    in_log = await codecs_in_log(bootstrap, stack.topic, ends)
    assert {where: in_log[where] for where in sent_with} == sent_with

    found, committed, recorder = await record_to_the_ends(
        stack, "compressed-read-raw", good_ids, ends
    )
    letters = await letters_by_source(bootstrap, stack.topic)
    print(
        f"\n[compressed, read raw] good {len(good_ids)} / stored {found.stored}"
        f" / missing {found.missing} / bad {sorted(bad)}"
        f" / dead-lettered {dict(recorder.health.dead_lettered)} / committed {committed}"
    )
    assert found.missing == 0
    for where in bad:  # decompressed: its key, value and headers are in the letter
        letter = letters[where]
        assert letter[envelope.DEAD_LETTER_REASON_HEADER] == b"undecodable"
        assert b"not UTF-8" in (letter[envelope.DEAD_LETTER_ERROR_HEADER] or b"")
        assert letter["trace-\\xff\\xfe-id"] == b"x"
        assert OMITTED_HEADER not in letter
    assert dict(recorder.health.dead_lettered) == {"undecodable": len(bad)}
    assert committed == ends


async def test_a_batch_compressed_with_a_codec_whose_library_is_missing_is_dead_lettered(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without cramjam (a deployment installed before the recorder extra brought it),
    # aiokafka's getmany() raises on a batch compressed with snappy, lz4 or zstd, and the raw
    # read cannot decompress it either: its records are dead-lettered, the records around
    # them stored (gzip's among them). A codec Kafka adds later takes the same way
    # (tests/unit/test_recorder_polling.py).
    bootstrap = stack.shared.kafka_bootstrap_servers
    good_ids: list[uuid.UUID] = []

    def events(*names: str) -> list[PredictionEvent]:
        made = [make_event(f"missing-codec-{name}") for name in names]
        good_ids.extend(uuid.UUID(event.event_id) for event in made)
        return made

    await send_compressed(bootstrap, stack.topic, 0, None, events("a1", "a2"))
    packed: dict[str, list[Offset]] = {}
    packed_ids: list[uuid.UUID] = []
    for codec in ("snappy", "lz4", "zstd"):
        made = [make_event(f"missing-codec-{codec}-{i}") for i in range(5)]
        packed_ids += [uuid.UUID(event.event_id) for event in made]
        packed[codec] = await send_compressed(bootstrap, stack.topic, 0, codec, made)
    sent_packed = [where for offsets in packed.values() for where in offsets]
    zipped = await send_compressed(bootstrap, stack.topic, 0, "gzip", events("g1", "g2", "g3"))
    await send_compressed(bootstrap, stack.topic, 1, None, events("b1", "b2"))
    ends = await written_ends(bootstrap, stack.topic)
    in_log = await codecs_in_log(bootstrap, stack.topic, ends)
    assert {c: {in_log[where] for where in packed[c]} for c in packed} == {
        c: {CODECS[c]} for c in packed
    }
    assert {in_log[where] for where in zipped} == {CODECS["gzip"]}

    # What aiokafka's availability checks (and so the recorder's) see without the library.
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)
    found, committed, _ = await record_to_the_ends(
        stack, "compressed-missing-codec", good_ids, ends
    )
    letters = await letters_by_source(bootstrap, stack.topic)
    reasons = [letters.get(w, {}).get(envelope.DEAD_LETTER_REASON_HEADER) for w in sent_packed]
    print(
        f"\n[codec library missing] good sent {len(good_ids)} / stored {found.stored}"
        f" / missing {found.missing} / packed at {packed} / their letters {reasons}"
        f" / committed {committed} / ends {ends}"
    )
    assert found.missing == 0
    assert (await stored(stack.database_url, packed_ids)).stored == 0
    for codec, offsets in packed.items():
        for where in offsets:
            letter = letters[where]
            assert letter[envelope.DEAD_LETTER_REASON_HEADER] == b"undecodable"
            error = (letter[envelope.DEAD_LETTER_ERROR_HEADER] or b"").decode()
            assert f"compressed with {codec}, and its library (cramjam) is not installed" in error
            assert "left in the source topic" in error
    assert committed == ends
