"""The kafka_connected gauge and /health say whether the broker answers, not whether it once
did: with idempotence aiokafka never expires a batch (publisher.py), so a broker lost mid-run is
a run of publish timeouts that never replaced the producer, and the gauge stayed 1:
InferenceKafkaDisconnected could not fire, and the pod's preStop waited for nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest

from inference_service.delivery import open_durable_publisher
from inference_service.health_endpoint import InferenceHealth
from inference_service.metrics import InferenceMetrics
from inference_service.producer_batches import Load, OpenBatches
from inference_service.publisher import KafkaPublisher
from studentperf.envelope import KafkaRecord


class SilentBroker:
    """A producer whose broker went away: it takes batches and never settles them (aiokafka
    with enable_idempotence never expires a batch: aio-libs/aiokafka#1101), until `answers`."""

    def __init__(self) -> None:
        self.answers = False
        self.unsettled: list[asyncio.Future[object]] = []

    def come_back(self) -> None:
        """The broker answers again: what it was sent is acknowledged, and what comes next."""
        self.answers = True
        for ack in self.unsettled:
            if not ack.done():
                ack.set_result(object())

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> Any:
        values: list[bytes] = []

        class Builder:
            closed = False

            def append(self, **_: Any) -> object | None:
                if self.closed:
                    return None
                values.append(b"")
                return object()

            def close(self) -> None:
                self.closed = True

        return Builder()

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        ack: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.answers:
            ack.set_result(object())
        self.unsettled.append(ack)
        return ack

    async def stop(self) -> None:
        pass


def kafka_connected_gauge(registry: CollectorRegistry) -> float:
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("studentperf_inference_kafka_connected "):
            return float(line.split()[1])
    raise AssertionError("studentperf_inference_kafka_connected not exported")


async def test_the_gauge_drops_while_the_broker_does_not_answer(tmp_path: Path) -> None:
    """The real DurablePublisher over the real KafkaPublisher, its producer connected once and
    the broker then silent: every call's events are spooled, and the gauge must say why."""
    registry = CollectorRegistry()
    metrics = InferenceMetrics(registry)
    kafka = KafkaPublisher("gone:9092", "t", publish_timeout_s=0.05, metrics=metrics)
    producer = SilentBroker()
    kafka._producer = cast(Any, producer)
    kafka._batches = OpenBatches(cast(Any, producer), "t", load=Load())
    kafka.connected.set()  # connected once, at start-up
    publisher = await open_durable_publisher(
        kafka, tmp_path / "spool", max_bytes=1 << 20, metrics=metrics
    )
    core = SimpleNamespace(in_flight=0, cut_off=0, model=SimpleNamespace(version="v"))
    status = InferenceHealth(cast(Any, core), publisher, registry)
    try:
        # The broker is gone: 40 calls' events (a quiet minute or two), each spooled.
        for n in range(40):
            await publisher.publish([KafkaRecord(key=f"s{n}".encode(), value=b"x", headers=[])])
        _, detail = status.health()
        failures = next(
            line for line in generate_latest(registry).decode().splitlines()
            if line.startswith("studentperf_inference_publish_failures_total ")
        )  # fmt: skip
        print(
            f"after 40 calls with no broker: spool_events {publisher.spool.records}, {failures}, "
            f"gauge kafka_connected {kafka_connected_gauge(registry):g}, /health "
            f"kafka_connected={detail['kafka_connected']}"
        )
        assert publisher.spool.records == 40
        assert kafka_connected_gauge(registry) == 0, (
            "studentperf_inference_kafka_connected still 1 with no broker answering: "
            "InferenceKafkaDisconnected cannot fire"
        )
        assert detail["kafka_connected"] is False

        producer.come_back()  # the next acknowledgement says so
        await kafka.publish([KafkaRecord(key=b"back", value=b"x", headers=[])])
        assert kafka_connected_gauge(registry) == 1
        assert status.health()[1]["kafka_connected"] is True
    finally:
        await publisher.stop(timeout_s=0.1)
