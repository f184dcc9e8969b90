"""A spool belongs to one service process and one destination (issue 14).

A test's spool once held events for a test topic; `make up` in the same clone replayed them into
the development topic, where they became rows. Now a second process cannot open a spool folder
in use, and a segment is sent only to the Kafka cluster and topic it was written for. This
module starts a second broker, standing in for the development cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from inference_service.spool import Destination, read_segment
from infra.devstack import KafkaBroker, free_port
from studentperf.config import SharedSettings
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack, running_kafka
from tests.integration.helpers import student, topic_size
from tests.integration.processes import ServiceProcess


@pytest.fixture(scope="module")
async def other_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaBroker]:
    async for broker in running_kafka(tmp_path_factory.mktemp("other-kafka")):
        yield broker


async def cluster_id(broker: KafkaBroker) -> str:
    admin = broker.admin_client()
    await admin.start()
    try:
        return str((await admin.describe_cluster())["cluster_id"])
    finally:
        await admin.close()


def settings(
    stack: Stack, broker: KafkaBroker, topic: str, spool: Path, **options: Any
) -> InferenceSettings:
    shared = SharedSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic=topic,
        database_url=stack.database_url,
    )
    return InferenceSettings(
        shared=shared,
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(spool),
        **options,
    )


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (polls state that no event announces)
            await asyncio.sleep(0.05)


async def predict(running: RunningServer, *student_ids: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        for student_id in student_ids:
            await stub.Predict(api.PredictRequest(student=student(student_id)), timeout=30)


async def test_a_second_service_on_a_spool_folder_in_use_refuses_to_start_naming_it(
    stack: Stack, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    running = await start_server(settings(stack, stack.kafka, stack.topic, spool))
    second = ServiceProcess(
        "inference_service",
        {
            "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
            "STUDENTPERF_KAFKA_TOPIC": stack.topic,
            "STUDENTPERF_DATABASE_URL": stack.database_url,
            "STUDENTPERF_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
            "STUDENTPERF_MODELS_DIR": str(stack.model_path),
            "STUDENTPERF_SPOOL_DIR": str(spool),
        },
        tmp_path / "second.log",
    )
    try:
        second.start()
        code = await second.wait_async(timeout=120)  # one that starts serving never returns
    finally:
        await second.stop_async()
        await running.stop(grace_s=1)
    said = second.log_path.read_text()
    print(f"\nsecond service: exit {code}; {second.log_tail(3)}")
    assert code == 2
    assert "cannot start" in said and f"{spool} is in use by another process" in said
    assert f"pid {os.getpid()} on {socket.gethostname()}" in said
    assert "Traceback" not in said


async def test_a_spool_is_replayed_only_into_the_cluster_and_topic_it_was_written_for(
    stack: Stack, other_kafka: KafkaBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="inference_service.spool")
    spool = tmp_path / "spool"
    tests_cluster, other_cluster = await cluster_id(stack.kafka), await cluster_id(other_kafka)
    # A test's service: on the test cluster, for a topic the broker does not have (and does not
    # create), so nothing is acknowledged and every event is spooled.
    test_topic = f"absent-{uuid.uuid4().hex[:8]}"
    first = await start_server(
        settings(stack, stack.kafka, test_topic, spool, publish_timeout_s=0.5)
    )
    try:
        await until(lambda: first.publisher.kafka_connected)
        await predict(first, *(f"reload-{i}" for i in range(5)))
        assert first.publisher.spool.records == 5
    finally:
        await first.stop(grace_s=1)
    segments = sorted(spool.glob("*.spool"))  # the replayer's tries seal one after another
    meant_for = Destination(test_topic, stack.kafka.bootstrap_servers, tests_cluster)
    assert {read_segment(s).destination for s in segments} == {meant_for}
    assert sum(len(read_segment(s).records) for s in segments) == 5

    # The development service, on another cluster and topic, with the same folder: the test's
    # events are kept, not sent, and it serves its own.
    development_topic = f"predictions-{uuid.uuid4().hex[:8]}"
    await other_kafka.create_topic(development_topic, partitions=3)
    second = await start_server(settings(stack, other_kafka, development_topic, spool))
    try:
        await until(lambda: second.publisher.spool.set_aside_records == 5)
        await predict(second, "dev-1")
        assert second.publisher.spool.empty
    finally:
        await second.stop(grace_s=1)
    assert all(s.exists() for s in segments)
    in_development = await topic_size(other_kafka.bootstrap_servers, development_topic)
    refused = caplog.text
    assert f"topic {test_topic!r} at cluster {tests_cluster}" in refused
    assert f"topic {development_topic!r} at cluster {other_cluster}" in refused

    # A topic of the same name on the other cluster does not take them either.
    await other_kafka.create_topic(test_topic, partitions=3)
    third = await start_server(settings(stack, other_kafka, test_topic, spool))
    try:
        await until(lambda: third.publisher.spool.set_aside_records == 5)
    finally:
        await third.stop(grace_s=1)
    assert all(s.exists() for s in segments)
    in_same_name_elsewhere = await topic_size(other_kafka.bootstrap_servers, test_topic)

    # Where they were meant to go, once that topic exists, they are delivered.
    await stack.kafka.create_topic(test_topic, partitions=3)
    fourth = await start_server(settings(stack, stack.kafka, test_topic, spool))
    try:
        await until(lambda: not any(s.exists() for s in segments))
        assert fourth.publisher.spool.set_aside_records == 0
    finally:
        await fourth.stop(grace_s=1)
    delivered = await topic_size(stack.kafka.bootstrap_servers, test_topic)
    print(
        f"\nspooled for {test_topic} at {tests_cluster}: 5; sent to the development topic "
        f"{in_development - 1}, to {test_topic} at {other_cluster} {in_same_name_elsewhere}, "
        f"to their own destination {delivered}"
    )
    assert in_development == 1  # its own prediction only
    assert in_same_name_elsewhere == 0
    assert delivered == 5
