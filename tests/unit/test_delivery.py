"""The durability promise with a fake broker: acknowledged, or spooled and replayed in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from inference_service.core import PublishUnavailable
from inference_service.delivery import (
    DurablePublisher,
    PendingSends,
    open_durable_publisher,
)
from inference_service.spool import Destination
from studentperf.envelope import KafkaRecord
from studentperf.retry import Backoff
from tests.unit.broker_fakes import HandingBroker


class FakeBroker:
    def __init__(self, topic: str = "predictions", cluster_id: str = "c-1") -> None:
        self.connected = asyncio.Event()
        self.answering = True
        self.up = True
        self.log: list[bytes] = []
        self._topic, self._cluster_id, self._known_cluster = topic, cluster_id, ""

    @property
    def destination(self) -> Destination:
        return Destination(self._topic, "127.0.0.1:9092", self._known_cluster)

    async def connect(self) -> None:
        self._known_cluster = self._cluster_id
        self.connected.set()

    async def publish(
        self, records: Sequence[KafkaRecord], pending: PendingSends | None = None
    ) -> None:
        if not self.up:
            raise PublishUnavailable("broker down")
        self.log += [r.value for r in records]

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.connected.clear()


def rec(name: str) -> KafkaRecord:
    return KafkaRecord(key=b"k", value=name.encode(), headers=[])


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (polls state that no event announces)
            await asyncio.sleep(0.01)


async def started(broker: FakeBroker, tmp_path: Path, max_bytes: int = 1 << 20) -> DurablePublisher:
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=max_bytes)
    publisher.start()
    await until(broker.connected.is_set)
    return publisher


async def test_acknowledged_events_skip_the_spool(tmp_path: Path) -> None:
    broker = FakeBroker()
    publisher = await started(broker, tmp_path)
    await publisher.publish([rec("a"), rec("b")])
    assert broker.log == [b"a", b"b"] and publisher.spool.empty
    await publisher.stop()


async def test_outage_spools_then_replays_in_order_before_new_events(tmp_path: Path) -> None:
    broker = FakeBroker()
    publisher = await started(broker, tmp_path)
    broker.up = False
    await publisher.publish([rec("1")])
    await publisher.publish([rec("2"), rec("3")])
    assert broker.log == [] and publisher.spool.records == 3
    broker.up = True
    await publisher.publish([rec("4")])  # the spool is not empty: this one queues behind it
    await until(lambda: publisher.spool.empty)
    assert broker.log == [b"1", b"2", b"3", b"4"]
    await publisher.publish([rec("5")])
    assert broker.log[-1] == b"5"
    await publisher.stop()


async def test_spooled_events_survive_a_restart(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.up = False
    publisher = await started(broker, tmp_path)
    await publisher.publish([rec("x")])
    await publisher.stop()

    broker.up = True
    again = await started(broker, tmp_path)
    await until(lambda: again.spool.empty)
    assert broker.log == [b"x"]
    await again.stop()


async def test_full_spool_is_unavailable(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.up = False
    publisher = await started(broker, tmp_path, max_bytes=64)
    with pytest.raises(PublishUnavailable, match="spool is full"):
        await publisher.publish([rec("x" * 100)])
    await publisher.stop()


async def test_a_spool_written_for_another_destination_is_kept_not_sent(tmp_path: Path) -> None:
    tests = FakeBroker(topic="test-topic", cluster_id="test-cluster")
    tests.up = False
    publisher = await started(tests, tmp_path)
    await publisher.publish([rec("a test's event")])
    await publisher.stop()
    [foreign] = tmp_path.glob("*.spool")

    development = FakeBroker()
    publisher = await started(development, tmp_path)
    await until(lambda: publisher.spool.set_aside_records == 1)
    await publisher.publish([rec("mine")])  # set aside, the spool is empty: straight to Kafka
    assert development.log == [b"mine"]
    assert foreign.exists() and publisher.spool.empty
    await publisher.stop()

    # Its own destination still takes it.
    tests.up = True
    publisher = await started(tests, tmp_path)
    await until(lambda: publisher.spool.empty)
    assert tests.log == [b"a test's event"] and not foreign.exists()
    await publisher.stop()


async def test_segments_spooled_before_connecting_name_the_cluster_after(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.up = False
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    await publisher.publish([rec("before")])  # not connected yet: no cluster id to write
    publisher.start()
    await until(broker.connected.is_set)
    await until(lambda: publisher.spool.destination.cluster_id == "c-1")
    broker.up = True
    await until(lambda: publisher.spool.empty)
    assert broker.log == [b"before"]
    await publisher.stop()


async def test_a_stalled_replay_hands_each_event_over_once_however_often_it_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's promise for a stall: a replay chunk that times out is waited for on retry, not
    handed over again, and the chunks acknowledged before it are not sent again; otherwise
    every retry puts one more copy of them in the topic for as long as the stall lasts."""
    monkeypatch.setattr("inference_service.delivery._REPLAY_CHUNK", 2)
    monkeypatch.setattr(
        "inference_service.delivery.REPLAY_BACKOFF", Backoff(first_s=0.01, max_s=0.02)
    )
    broker = HandingBroker(acks_left=2)  # the first chunk, then a stall
    publisher = await open_durable_publisher(broker, tmp_path, max_bytes=1 << 20)
    events = [rec(f"e{n}") for n in range(6)]
    await publisher.spool.append(events)
    publisher.start()
    await until(lambda: broker.tries >= 5)  # the second chunk's first try, then retries
    broker.recover()
    await until(lambda: publisher.spool.empty)
    assert [record.value for record, _ in broker.handed] == [e.value for e in events]
    assert broker.log == [e.value for e in events]
    await publisher.stop()
