"""The dev-stack library starts a real Kafka broker and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.devstack import KafkaBroker, PostgresServer, free_port

pytestmark = pytest.mark.integration

TOPIC = "devstack-smoke"


async def test_broker_and_postgres_start_serve_and_stop(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    pg = PostgresServer(tmp_path / "pg", port=free_port())
    try:
        broker.start()
        pg.start()
        await asyncio.gather(broker.wait_ready(90), pg.wait_ready(30))

        assert await broker.create_topic(TOPIC, partitions=1)
        assert not await broker.create_topic(TOPIC, partitions=1)  # idempotent

        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, enable_idempotence=True, acks="all"
        )
        await producer.start()
        try:
            meta = await producer.send_and_wait(TOPIC, b"hello", key=b"k")
        finally:
            await producer.stop()
        assert meta.offset == 0

        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(TOPIC, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            record = await asyncio.wait_for(consumer.getone(), timeout=10)
        finally:
            await consumer.stop()
        assert (record.key, record.value) == (b"k", b"hello")

        assert await pg.ensure_database("studentperf")
        assert not await pg.ensure_database("studentperf")
        conn = await asyncpg.connect(pg.dsn("studentperf"))
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        broker.stop()
        pg.stop()
    assert not broker.running
    assert not pg.running
