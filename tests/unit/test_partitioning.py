"""The service picks each record's partition itself: it must be the one every other Kafka
client picks for the key, or one student's events would be split over partitions."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from inference_service.partitioning import murmur2, partition_of


@pytest.mark.parametrize(
    ("key", "java"),
    [  # org.apache.kafka.common.utils.UtilsTest.testMurmur2 (signed 32-bit)
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_is_the_java_clients(key: str, java: int) -> None:
    assert murmur2(key.encode()) == java & 0xFFFFFFFF


def test_every_key_length_and_partition_count_agrees_with_aiokafka() -> None:
    draw = random.Random(17)
    for length in range(70):
        for _ in range(40):
            key = draw.randbytes(length)
            count = draw.randint(1, 12)
            assert murmur2(key) == aiokafka_murmur2(key)
            everything = list(range(count))
            assert partition_of(key, count) == DefaultPartitioner()(key, everything, everything)


def test_student_ids_spread_over_the_partitions() -> None:
    chosen = {partition_of(f"S-{number:06d}".encode(), 3) for number in range(100)}
    assert chosen == {0, 1, 2}
