"""The poller and the raw reader: a header name that is not UTF-8 skips and stops nothing.

The fake consumer below does what aiokafka 0.14's getmany() does with such a record (see
recorder_service/polling.py): it raises whenever it reaches the batch holding it, losing the
records of that call, and the positions of partitions drained before it in the same call stay
moved past records never handed on. The raw fetches get real record batches, built with
aiokafka's own batch builder.
"""

from __future__ import annotations

import asyncio

import aiokafka.codec
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.record.default_records import DefaultRecordBatch, _DefaultRecordBatchBuilderPy
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder_service.batching import Chunk, UnreadableRecord
from recorder_service.polling import Poller
from recorder_service.raw_records import FetchedRecord, parse
from tests.integration.raw_batches import RawName
from tests.unit.recorder_fakes import TOPIC

TP = TopicPartition(TOPIC, 0)
BAD_NAME = b"n\xff\xfe"
Header = tuple[bytes, bytes | None]


def build(base: int, records: list[tuple[bytes | None, list[Header]]], codec: int = 0) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(2, codec, 0, -1, -1, -1, 1 << 24)
    for delta, (value, headers) in enumerate(records):
        named: list[tuple[str, bytes | None]] = [(RawName(k), v) for k, v in headers]
        builder.append(delta, timestamp=1_000 + delta, key=b"k", value=value, headers=named)
    batch = bytearray(builder.build())
    batch[0:8] = base.to_bytes(8, "big")  # the broker assigns the base offset
    # The builder leaves records uncompressed when compressing would not make them smaller.
    assert batch[22] & 0x07 == codec, "records too small to compress: make them longer"
    return bytes(batch)


def test_parse_reads_what_aiokafka_reads_and_the_record_it_cannot() -> None:
    good: list[Header] = [
        (b"schema-version", b"1"),
        (b"", b"empty"),
        (b"h" * 70_000, None),
        (b"blank", b""),  # empty, not null
    ]
    data = build(10, [(b"v0", good), (None, [(b"ok", b"1"), (BAD_NAME, b"x")]), (b"v2", [])])
    records, after = parse(data, TP, 10, budget=100)
    assert after == 13
    assert [type(r) for r in records] == [FetchedRecord, UnreadableRecord, FetchedRecord]
    theirs = list(DefaultRecordBatch(build(10, [(b"v0", good)])))
    assert (records[0].offset, records[0].timestamp) == (10, theirs[0].timestamp)
    assert (records[0].key, records[0].value) == (theirs[0].key, theirs[0].value)
    assert list(records[0].headers) == list(theirs[0].headers)
    bad = records[1]
    assert (bad.offset, bad.key, bad.value) == (11, b"k", None)
    assert list(bad.headers) == [("ok", b"1"), ("n\\xff\\xfe", b"x")]
    assert parse(data, TP, 12, budget=100)[0][0].offset == 12  # earlier ones are dropped


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
def test_parse_reads_compressed_batches_and_stops_at_whole_batches(codec: int) -> None:
    plain = build(0, [(b"a", []), (b"b", [(BAD_NAME, None)])])
    c, d = b"c" * 100, b"d" * 100
    packed = build(2, [(c, []), (d, [(BAD_NAME, b"x")])], codec=codec)
    records, after = parse(plain + packed + packed[:20], TP, 0, budget=100)
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (2, c), (3, d)]
    assert [type(r) for r in records[2:]] == [FetchedRecord, UnreadableRecord]
    assert after == 4
    assert parse(plain + packed, TP, 0, budget=1) == (records[:2], 2)  # whole batches only
    assert parse(plain + packed, TP, 0, budget=2) == (records[:2], 2)  # none once it is reached
    assert parse(packed[:20], TP, 2, budget=100) == ([], None)  # no whole batch: no offset


def test_parse_hands_on_a_batch_it_cannot_decompress_as_unreadable_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    packed = build(0, [(b"a" * 100, []), (b"b" * 100, [])], codec=4)
    unknown = bytearray(build(2, [(b"c", [])]))
    unknown[22] |= 0x05  # codec 5 in the attributes (their low byte): none Kafka has yet
    after_them = build(3, [(b"d", [])])
    monkeypatch.setattr(aiokafka.codec, "cramjam", None)  # what aiokafka sees without it
    records, after = parse(packed + bytes(unknown) + after_them, TP, 1, budget=100)
    assert after == 4
    assert [(type(r), r.offset) for r in records] == [
        (UnreadableRecord, 1),
        (UnreadableRecord, 2),
        (FetchedRecord, 3),
    ]
    assert all(r.value is None for r in records[:2])  # nothing of a batch it cannot read
    assert [r.error for r in records[:2] if isinstance(r, UnreadableRecord)] == [
        "its record batch is compressed with zstd, and its library (cramjam) is not installed:"
        " pip install 'studentperf[recorder]' brings it;"
        " its key, value and headers are left in the source topic",
        "its record batch is compressed with codec 5, which this Kafka client does not know;"
        " its key, value and headers are left in the source topic",
    ]


class AiokafkaLike:
    """getmany() as aiokafka 0.14 behaves with unreadable header names (see the module)."""

    def __init__(self, logs: dict[TopicPartition, list[list[bool]]]) -> None:
        # Per partition, its batches; each record True when its header name is not UTF-8.
        self.batches: dict[TopicPartition, list[tuple[int, list[bool]]]] = {}
        for tp, batches in logs.items():
            base, placed = 0, []
            for batch in batches:
                placed.append((base, batch))
                base += len(batch)
            self.batches[tp] = placed
        self.position = dict.fromkeys(logs, 0)
        self.raised = 0

    def end(self, tp: TopicPartition) -> int:
        return sum(len(b) for _, b in self.batches[tp])

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FetchedRecord]]:
        limit = max_records or 500
        out: dict[TopicPartition, list[FetchedRecord]] = {}
        for tp in partitions or sorted(self.batches):
            got: list[FetchedRecord] = []
            for base, batch in self.batches[tp]:
                if base + len(batch) <= self.position[tp]:
                    continue
                for i, bad in enumerate(batch):
                    if bad:  # the whole batch is decoded, from its first record
                        self.raised += 1
                        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
                    offset = base + i
                    if offset >= self.position[tp] and len(got) < limit:
                        got.append(record(tp, offset))
            if got:
                self.position[tp] = got[-1].offset + 1  # drained: lost if a later one raises
                out[tp] = got
                limit -= len(got)
            if limit == 0:
                break
        await asyncio.sleep(0)
        return out

    async def raw_fetch(self, tp: TopicPartition, offset: int, wait_ms: int) -> bytes:
        data = b""
        for base, batch in self.batches[tp]:
            if base + len(batch) > offset:
                headers: list[list[Header]] = [[(BAD_NAME, b"x")] if b else [] for b in batch]
                data += build(base, [(b"v%d" % (base + i), h) for i, h in enumerate(headers)])
        return data

    def assignment(self) -> set[TopicPartition]:
        return set(self.batches)

    def paused(self) -> set[TopicPartition]:
        return set()

    def pause(self, *tps: TopicPartition) -> None:
        raise AssertionError("not used")

    def resume(self, *tps: TopicPartition) -> None:
        raise AssertionError("not used")

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise AssertionError("not used")

    async def committed(self, partition: TopicPartition) -> int | None:
        return None  # nothing committed: the group starts at the earliest offset

    async def beginning_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        return dict.fromkeys(partitions, 0)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.end(tp) for tp in partitions}


def record(tp: TopicPartition, offset: int) -> FetchedRecord:
    return FetchedRecord(tp.topic, tp.partition, offset, 0, b"k", b"v%d" % offset, ())


batches = st.lists(st.lists(st.booleans(), min_size=1, max_size=4), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    logs=st.lists(batches, min_size=1, max_size=3),
    max_records=st.integers(1, 6),
)
def test_every_record_is_handed_on_once_in_order_and_only_the_bad_are_unreadable(
    logs: list[list[list[bool]]], max_records: int
) -> None:
    consumer = AiokafkaLike({TopicPartition(TOPIC, p): b for p, b in enumerate(logs)})
    poller = Poller(consumer, lambda: 0, consumer.raw_fetch)
    handed: dict[TopicPartition, list[tuple[int, bool]]] = {tp: [] for tp in consumer.batches}

    async def drain() -> None:
        for _ in range(200):
            chunk = await poller(timeout_ms=0, max_records=max_records)
            for tp, records in chunk.items():
                handed[tp] += [(r.offset, isinstance(r, UnreadableRecord)) for r in records]
            if all(consumer.position[tp] == consumer.end(tp) for tp in handed):
                return

    asyncio.run(drain())
    for tp, placed in consumer.batches.items():
        expected = [(base + i, bad) for base, batch in placed for i, bad in enumerate(batch)]
        assert handed[tp] == expected, tp


def test_a_broker_away_during_the_raw_read_loses_nothing_and_is_tried_again() -> None:
    consumer = AiokafkaLike({TopicPartition(TOPIC, 0): [[False], [False, True, False]]})
    failures = [KafkaConnectionError("broker away")]

    async def flaky_fetch(tp: TopicPartition, offset: int, wait_ms: int) -> bytes:
        if failures:
            raise failures.pop()
        return await consumer.raw_fetch(tp, offset, wait_ms)

    poller = Poller(consumer, lambda: 0, flaky_fetch)

    async def polls() -> list[list[tuple[int, bool]]]:
        return [
            [(r.offset, isinstance(r, UnreadableRecord)) for rs in chunk.values() for r in rs]
            for chunk in [await poller(timeout_ms=0, max_records=10) for _ in range(3)]
        ]

    # The first poll raises inside aiokafka after handing out nothing; the raw read fails, the
    # second poll reads raw from offset 0 again, the third finds the partition at its end.
    assert asyncio.run(polls()) == [[], [(0, False), (1, False), (2, True), (3, False)], []]
    assert consumer.position[TopicPartition(TOPIC, 0)] == 4


def test_a_rebalance_during_the_raw_read_hands_on_nothing_read_under_the_old_one() -> None:
    tp = TopicPartition(TOPIC, 0)
    consumer = AiokafkaLike({tp: [[False, True]]})
    epoch = [0]

    async def fetch_during_a_rebalance(tp: TopicPartition, offset: int, wait_ms: int) -> bytes:
        data = await consumer.raw_fetch(tp, offset, wait_ms)
        if epoch[0] == 0:
            epoch[0] = 1  # reassigned meanwhile: the new assignment starts at the committed 0
            consumer.position[tp] = 0
        return data

    poller = Poller(consumer, lambda: epoch[0], fetch_during_a_rebalance)

    async def polls() -> list[list[tuple[int, bool]]]:
        return [
            [(r.offset, isinstance(r, UnreadableRecord)) for rs in chunk.values() for r in rs]
            for chunk in [await poller(timeout_ms=0, max_records=10) for _ in range(2)]
        ]

    assert asyncio.run(polls()) == [[], [(0, False), (1, True)]]
    assert consumer.position[tp] == 2


def test_between_a_revocation_and_the_next_assignment_only_getmany_is_called() -> None:
    """The raw read must not read the partitions being revoked (it would hand them on under the
    new epoch, beside their next owner); and getmany() must still be called, for it alone
    delivers an error aiokafka's group coordination pushed (a failed rejoin), without which the
    member waits for an assignment that never comes."""
    tp = TopicPartition(TOPIC, 0)
    consumer = AiokafkaLike({tp: [[False, True, False]]})
    epoch, reassigning = [0], [False]
    fetches: list[int] = []
    failures = [KafkaConnectionError("leader moving")]

    async def fetch(tp: TopicPartition, offset: int, wait_ms: int) -> bytes:
        fetches.append(offset)
        if failures:
            raise failures.pop()
        return await consumer.raw_fetch(tp, offset, wait_ms)

    poller = Poller(consumer, lambda: epoch[0], fetch, reassigning=lambda: reassigning[0])
    getmany = consumer.getmany

    async def pushed(*_: object, **__: object) -> object:
        raise KafkaError("the rejoin failed")

    async def polls() -> list[list[int]]:
        found = [await poller(timeout_ms=0, max_records=10)]  # raises inside; raw read fails
        epoch[0], reassigning[0] = 1, True  # a revocation began
        consumer.getmany = pushed  # type: ignore[method-assign,assignment]
        with pytest.raises(KafkaError, match="the rejoin failed"):
            await poller(timeout_ms=0, max_records=10)
        assert fetches == [0], "nothing read raw during the reassignment"
        consumer.getmany = getmany  # type: ignore[method-assign]
        found.append(await poller(timeout_ms=0, max_records=10))  # assigned: still unreadable
        reassigning[0] = False
        found.append(await poller(timeout_ms=0, max_records=10))
        return [[r.offset for rs in chunk.values() for r in rs] for chunk in found]

    assert asyncio.run(polls()) == [[], [], [0, 1, 2]]


def offsets(chunk: Chunk) -> dict[int, list[tuple[int, bool]]]:
    """A chunk as partition: [(offset, unreadable)]."""
    return {
        tp.partition: [(r.offset, isinstance(r, UnreadableRecord)) for r in records]
        for tp, records in chunk.items()
    }


def test_a_raw_read_that_fails_before_seeking_back_still_rewinds_on_the_next_poll() -> None:
    """getmany() moved partition 0 past records it never handed on when it raised at partition
    1; the raw read then fails before seeking back. The next poll must seek back and read raw,
    not ask getmany() again, which would hand on the records that came since and skip those."""
    p0, p1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = AiokafkaLike({p0: [[False, False]], p1: [[True]]})
    end_offsets, failures = consumer.end_offsets, [KafkaConnectionError("broker away")]

    async def flaky_end_offsets(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if failures:
            raise failures.pop()
        return await end_offsets(partitions)

    consumer.end_offsets = flaky_end_offsets  # type: ignore[method-assign]
    poller = Poller(consumer, lambda: 0, consumer.raw_fetch)

    async def polls() -> list[dict[int, list[tuple[int, bool]]]]:
        found = [offsets(await poller(timeout_ms=0, max_records=10))]
        consumer.batches[p0].append((2, [False, False]))  # more records come meanwhile
        found += [offsets(await poller(timeout_ms=0, max_records=2)) for _ in range(3)]
        return found

    assert asyncio.run(polls()) == [
        {},
        {0: [(0, False), (1, False)]},  # read raw from 0: none of it was handed on yet
        {0: [(2, False), (3, False)]},
        {1: [(0, True)]},
    ]


def test_once_read_raw_the_poller_goes_back_to_getmany_with_at_most_what_was_asked() -> None:
    consumer = AiokafkaLike({TP: [[True], [False]]})
    fetches: list[int] = []

    async def fetch(tp: TopicPartition, offset: int, wait_ms: int) -> bytes:
        fetches.append(offset)
        return await consumer.raw_fetch(tp, offset, wait_ms)

    poller = Poller(consumer, lambda: 0, fetch)

    async def polls() -> list[dict[int, list[tuple[int, bool]]]]:
        return [offsets(await poller(timeout_ms=0, max_records=1)) for _ in range(2)]

    # The raw read stops after the batch that reaches max_records; what follows is getmany()'s.
    assert asyncio.run(polls()) == [{0: [(0, True)]}, {0: [(1, False)]}]
    assert fetches == [0]


def test_after_a_rebalance_the_raw_read_starts_where_the_new_assignment_was_handed_on() -> None:
    """What getmany() handed on before a rebalance is forgotten (the batch holding it is
    dropped, and the new assignment reads it again from the committed offset); what it handed
    on since is not read again. Here an unreadable record comes after two handed on."""
    epoch = [0]

    async def polls(rebalance_first: bool) -> list[dict[int, list[tuple[int, bool]]]]:
        consumer = AiokafkaLike({TP: [[False, False]]})
        poller = Poller(consumer, lambda: epoch[0], consumer.raw_fetch)
        if rebalance_first:
            epoch[0] += 1
        found = [offsets(await poller(timeout_ms=0, max_records=10))]
        consumer.batches[TP].append((2, [True]))
        if not rebalance_first:
            epoch[0] += 1
            consumer.position[TP] = 0  # the new assignment starts at the committed offset
        found.append(offsets(await poller.poll(timeout_ms=0)))  # as while the store is away
        return found

    handed = {0: [(0, False), (1, False)]}
    assert asyncio.run(polls(rebalance_first=False)) == [handed, {0: [*handed[0], (2, True)]}]
    assert asyncio.run(polls(rebalance_first=True)) == [handed, {0: [(2, True)]}]


def test_the_raw_read_fetches_no_partition_at_its_end_nor_past_the_records_asked_for() -> None:
    """Each raw fetch at a partition's end waits RAW_WAIT_MS for nothing."""
    p0, p1, p2 = (TopicPartition(TOPIC, p) for p in range(3))
    consumer = AiokafkaLike({p0: [[False]], p1: [[True], [False]], p2: [[False]]})
    fetches: list[tuple[int, int]] = []

    async def fetch(tp: TopicPartition, offset: int, wait_ms: int) -> bytes:
        fetches.append((tp.partition, offset))
        return await consumer.raw_fetch(tp, offset, wait_ms)

    poller = Poller(consumer, lambda: 0, fetch)

    async def polls() -> list[dict[int, list[tuple[int, bool]]]]:
        # Partition 0 is handed on to its end; then getmany() raises at partition 1, whose
        # two batches read raw use up the two records asked for: partition 2 waits.
        return [offsets(await poller(timeout_ms=0, max_records=m)) for m in (1, 2, 2)]

    assert asyncio.run(polls()) == [
        {0: [(0, False)]},
        {1: [(0, True), (1, False)]},
        {2: [(0, False)]},
    ]
    assert fetches == [(1, 0)]
