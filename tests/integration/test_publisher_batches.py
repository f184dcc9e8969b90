"""Batched publishing keeps Kafka's keyed order: one student's events, one partition, in order."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from inference_service.publisher import KafkaPublisher
from infra.devstack import KafkaBroker
from studentperf.envelope import KafkaRecord


async def test_batched_records_land_where_send_would_put_them_in_order(
    kafka: KafkaBroker,
) -> None:
    topic = f"batches-{uuid.uuid4().hex[:8]}"
    await kafka.create_topic(topic, partitions=3)
    # Small producer batches, so one call's records span several of them per partition.
    publisher = KafkaPublisher(
        kafka.bootstrap_servers,
        topic,
        publish_timeout_s=10,
        extra_options={"max_batch_size": 4096},
    )
    await publisher.connect(give_up_after_s=30)
    sent = [
        KafkaRecord(key=f"s{i % 37}".encode(), value=f"{i}".encode() * 20, headers=[("n", b"1")])
        for i in range(1500)
    ]
    try:
        await publisher.publish(sent[:700])
        await publisher.publish(sent[700:])
    finally:
        await publisher.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    received: list[tuple[int, bytes, bytes]] = []
    try:
        while len(received) < len(sent):
            batches = await consumer.getmany(timeout_ms=5000)
            assert batches, f"only {len(received)} of {len(sent)} records arrived"
            for part, messages in batches.items():
                received += [(part.partition, m.key or b"", m.value or b"") for m in messages]
    finally:
        await consumer.stop()

    assert len(received) == len(sent)
    for key in {r.key for r in sent}:
        want = [r.value for r in sent if r.key == key]
        got = [(p, value) for p, k, value in received if k == key]
        assert [value for _, value in got] == want  # every one, in the order sent
        assert {p for p, _ in got} == {DefaultPartitioner()(key, [0, 1, 2], [0, 1, 2])}


async def test_a_lone_publish_is_sent_at_once_not_held(kafka: KafkaBroker) -> None:
    """With nothing else under way (and the process not busy), a call's event is handed to the
    producer within a few turns of the event loop, in a closed batch that does not linger
    there either (a 2 ms linger cost each lone call 2 ms, most of a Predict's latency)."""
    topic = f"lone-{uuid.uuid4().hex[:8]}"
    await kafka.create_topic(topic, partitions=3)
    publisher = KafkaPublisher(kafka.bootstrap_servers, topic, publish_timeout_s=10)
    await publisher.connect(give_up_after_s=30)
    try:
        producer = publisher._producer
        assert producer is not None
        waiting = producer._message_accumulator._batches  # per partition, not yet sent
        # The first one also fetches the topic's partitions.
        await publisher.publish([KafkaRecord(key=b"s", value=b"v", headers=[])])
        handed: list[int] = []
        send_batch = producer.send_batch

        async def spy(*args: Any, **kwargs: Any) -> Any:
            handed.append(len(handed))
            return await send_batch(*args, **kwargs)

        producer.send_batch = spy
        for number in range(5):
            record = KafkaRecord(key=f"s{number}".encode(), value=b"v", headers=[])
            handed.clear()
            publish = asyncio.create_task(publisher.publish([record]))
            turns = 0
            while not handed:
                turns += 1
                assert turns <= 5, "the record is not handed to the producer in 5 loop turns"
                await asyncio.sleep(0)
            while any(waiting.values()):
                turns += 1
                assert turns <= 50, "the record still waits in the producer after 50 loop turns"
                await asyncio.sleep(0)
            print(f"lone publish {number}: sent after {turns} loop turn(s)")
            await publish  # and acknowledged
    finally:
        await publisher.stop()
