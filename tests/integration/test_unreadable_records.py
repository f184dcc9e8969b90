"""Records aiokafka cannot read: a header name that is not UTF-8, amid a steady load.

aiokafka's getmany() raises UnicodeDecodeError on such a record, every time it reaches it, and
loses the records it had gathered before it, of its partition and of others. The batches here
are made by hand (aiokafka's producer cannot write such a name), with the bad records between
good ones in the same batch, first in a batch, and two in a row, while a load keeps every
partition busy. The recorder must stay up, store every good event, dead-letter each bad record
as `undecodable` at its own offset, and commit every partition to its end. Header names that
are empty or huge are read fine: those events are stored, or dead-lettered for their value.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from recorder_service.dead_letters import OMITTED_HEADER
from recorder_service.service import run as run_recorder
from recorder_service.settings import DEAD_LETTER_SUFFIX
from recorder_service.settings import Settings as RecorderSettings
from studentperf import envelope
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import Stack
from tests.integration.helpers import eventually, read_all
from tests.integration.raw_batches import RawRecord, produce_batch
from tests.integration.recorder_support import (
    Load,
    letter_headers,
    letter_source,
    make_event,
    topic_ends,
    unless_ended,
    wait_committed,
    wait_stored,
)

NOT_UTF8 = b"trace-\xff\xfe-id"
HUGE_NAME = b"h" * 300_000


def good(name: str, *extra: tuple[bytes, bytes | None]) -> tuple[uuid.UUID, RawRecord]:
    event = make_event(f"unreadable-{name}")
    record = envelope.encode(event)
    headers = [(k.encode(), v) for k, v in record.headers]
    return uuid.UUID(event.event_id), RawRecord(record.key, record.value, [*headers, *extra])


def bad_name(name: str) -> RawRecord:
    return good(name, (NOT_UTF8, b"x"))[1]


async def test_unreadable_header_names_are_dead_lettered_between_good_records(
    stack: Stack,
) -> None:
    bootstrap = stack.shared.kafka_bootstrap_servers
    settings = RecorderSettings(
        shared=stack.shared, consumer_group="unreadable-records", batch_max_wait_ms=50
    )
    stop = asyncio.Event()
    recording = asyncio.create_task(run_recorder(settings, stop))
    load = Load(bootstrap, stack.topic, per_second=300)
    load.start()

    good_ids: list[uuid.UUID] = []
    bad: set[tuple[int, int]] = set()  # (partition, offset) of each unreadable record
    odd_bad: set[tuple[int, int]] = set()  # readable, with a huge name, but no event
    batches: list[tuple[int, list[str | None]]] = [
        # None marks where a record with a non-UTF-8 header name goes.
        (0, ["a1", "a2", None, "a3", "a4"]),
        (1, [None, "b1", "b2"]),
        (2, ["c1", None, None, "c2"]),
        (0, ["d1", "d2", "d3", None]),
    ]
    try:
        for round_ in range(2):
            for partition, plan in batches:
                records: list[RawRecord] = []
                for item in plan:
                    if item is None:
                        records.append(bad_name(f"bad-{round_}"))
                    else:
                        event_id, record = good(f"{item}-{round_}")
                        good_ids.append(event_id)
                        records.append(record)
                offsets = await produce_batch(bootstrap, stack.topic, partition, records)
                bad |= {(partition, o) for o, item in zip(offsets, plan, strict=True) if not item}
                await asyncio.sleep(0.3)
            empty_id, empty = good(f"empty-name-{round_}", (b"", b"empty name"))
            huge_id, huge = good(f"huge-name-{round_}", (HUGE_NAME, None))
            garbage = RawRecord(None, b"\x00not an event", [(HUGE_NAME, b"v")])
            offsets = await produce_batch(bootstrap, stack.topic, 1, [empty, huge, garbage])
            good_ids += [empty_id, huge_id]
            odd_bad.add((1, offsets[2]))
    finally:
        good_ids += await load.stop()

    found = await unless_ended(recording, wait_stored(stack.database_url, good_ids, timeout=90))
    letters_topic = stack.topic + DEAD_LETTER_SUFFIX

    async def lettered() -> int:
        return len({letter_source(h) for h in await letter_headers(bootstrap, letters_topic)})

    await unless_ended(recording, eventually(lettered, len(bad) + len(odd_bad), timeout=60))
    ends = await topic_ends(bootstrap, stack.topic)
    committed = await unless_ended(
        recording, wait_committed(bootstrap, settings.consumer_group, ends, timeout=30)
    )
    running = not recording.done()
    letters = await read_all(bootstrap, letters_topic)
    stop.set()
    recorder = await asyncio.wait_for(recording, 30)

    copies = Counter(letter_source(dict(letter.headers)) for letter in letters)
    print(
        f"\n[unreadable header names] good sent {len(good_ids)} / stored {found.stored}"
        f" / missing {found.missing} / unreadable sent {len(bad)}"
        f" / other bad sent {len(odd_bad)} / dead-lettered {len(copies)}"
        f" (copies {len(letters) - len(copies)})"
        f" / by reason {dict(recorder.health.dead_lettered)}"
        f" / committed {dict(sorted(committed.items()))} / topic ends {ends}"
        f" / recorder running {running}",
        flush=True,
    )
    assert running
    assert found.missing == 0
    assert set(copies) == bad | odd_bad
    for letter in letters:
        h = dict(letter.headers)
        assert h[envelope.DEAD_LETTER_REASON_HEADER] == b"undecodable"
        assert OMITTED_HEADER not in h
        if letter_source(h) in bad:  # read raw: its value and headers are kept
            assert b"not UTF-8" in (h[envelope.DEAD_LETTER_ERROR_HEADER] or b"")
            assert h["trace-\\xff\\xfe-id"] == b"x"
            assert PredictionEvent.FromString(letter.value or b"").event_id
    assert dict(recorder.health.dead_lettered) == {"undecodable": len(bad) + len(odd_bad)}
    assert committed == ends
