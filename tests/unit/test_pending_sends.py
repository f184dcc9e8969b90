"""What a retry of a replay chunk hands over again (delivery.PendingSends): only the records
that may not be stored, each partition's from its first unacknowledged batch on, in order."""

from __future__ import annotations

import asyncio

from aiokafka.errors import NodeNotReadyError

from inference_service.delivery import Handed, PendingSends
from studentperf.envelope import KafkaRecord

PRODUCER, NEXT_PRODUCER = object(), object()


def record(value: str) -> KafkaRecord:
    return KafkaRecord(key=value[:1].encode(), value=value.encode(), headers=[])


def handed(partition: int, *values: str, ended: str = "pending") -> Handed:
    ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    if ended == "acknowledged":
        ack.set_result(None)
    elif ended == "refused":
        ack.set_exception(NodeNotReadyError("leader not ready"))
    return Handed(partition, [record(v) for v in values], ack)


def values(records: list[KafkaRecord]) -> list[str]:
    return [r.value.decode() for r in records]


async def test_a_first_try_hands_over_every_record() -> None:
    chunk = [record("a1"), record("b1")]
    assert PendingSends().left(PRODUCER, chunk) == ([], chunk)


async def test_sends_still_pending_on_the_same_producer_are_waited_for_not_sent_again() -> None:
    sends = [handed(0, "a1", "a2"), handed(1, "b1")]
    pending = PendingSends()
    pending.keep(PRODUCER, sends)
    assert pending.left(PRODUCER, []) == (sends, [])


async def test_one_refused_batch_sends_again_only_its_partition() -> None:
    """The broker stored partition 1's batch: sending the whole chunk again would copy it."""
    pending = PendingSends()
    waiting = handed(2, "c1")
    pending.keep(
        PRODUCER,
        [handed(0, "a1", ended="refused"), handed(1, "b1", ended="acknowledged"), waiting],
    )
    again_waiting, again = pending.left(PRODUCER, [])
    assert again_waiting == [waiting]
    assert values(again) == ["a1"]


async def test_on_a_new_producer_everything_not_acknowledged_is_sent_again() -> None:
    pending = PendingSends()
    pending.keep(PRODUCER, [handed(0, "a1"), handed(1, "b1", ended="acknowledged")])
    assert pending.left(NEXT_PRODUCER, []) == ([], [record("a1")])


async def test_a_partition_is_sent_again_from_its_first_failure_on_keeping_its_order() -> None:
    """A later batch of the partition was stored, but sending only the failed one would put a
    student's earlier event after a later one."""
    pending = PendingSends()
    pending.keep(
        PRODUCER,
        [
            handed(0, "a1", ended="acknowledged"),
            handed(0, "a2", ended="refused"),
            handed(0, "a3", ended="acknowledged"),
            handed(0, "a4"),
        ],
    )
    assert values(pending.left(PRODUCER, [])[1]) == ["a2", "a3", "a4"]


async def test_a_cancelled_send_counts_as_not_stored() -> None:
    pending = PendingSends()
    cancelled = handed(0, "a1")
    cancelled.ack.cancel()
    pending.keep(PRODUCER, [cancelled])
    assert values(pending.left(PRODUCER, [])[1]) == ["a1"]


async def test_when_all_was_acknowledged_nothing_is_left() -> None:
    pending = PendingSends()
    pending.keep(PRODUCER, [handed(0, "a1", ended="acknowledged")])
    assert pending.left(PRODUCER, [record("a1")]) == ([], [])


async def test_records_a_try_never_handed_over_come_after_its_partitions_resends() -> None:
    """A timeout cut the hand-over short: a1's batch was refused, a2 never handed over."""
    pending = PendingSends()
    pending.keep(PRODUCER, [handed(0, "a1", ended="refused")], [record("a2"), record("b1")])
    assert values(pending.left(PRODUCER, [])[1]) == ["a1", "a2", "b1"]
