"""README claims about the inference service that no other test checked, each on the real
service, broker and models of the test session:

- `/health` answers 503 once the spool is full, and 200 again once it drains;
- `STUDENTPERF_MICROBATCH_WAIT_MS=0` turns micro-batching off, `STUDENTPERF_MODEL_POLL_INTERVAL_S=0`
  hot reload, and the service serves on without them;
- a model trained for another pass mark is refused at start-up, not only on reload;
- a listen address or health port another server holds stops the start with a message naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from infra.bench.process import HealthClient
from infra.devstack import KafkaBroker, free_port, port_open
from studentperf.config import ConfigError, DatabaseRole
from studentperf.model_artifact import (
    ModelArtifactError,
    resolve_version_dir,
    set_current,
)
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack, inference_settings
from tests.integration.helpers import student, topic_size, train_version
from tests.integration.processes import ServiceProcess

# Concurrent Predict calls sent at once to see whether they share model calls and publishes.
CONCURRENT_CALLS = 64


@contextlib.asynccontextmanager
async def served(settings: InferenceSettings) -> AsyncIterator[RunningServer]:
    running = await start_server(settings)
    try:
        yield running
    finally:
        await running.stop(grace_s=5)


def metric(running: RunningServer, name: str) -> float:
    """A sample of the server's own /metrics registry (0 when it has none yet)."""
    assert running.status is not None
    for family in text_string_to_metric_families(running.status.metrics()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


async def health(client: HealthClient) -> tuple[int, dict[str, object]]:
    code, body = await asyncio.to_thread(client.get, "/health")
    return code, json.loads(body)


async def test_health_is_503_while_the_spool_is_full_and_200_once_it_drains(
    stack: Stack, kafka: KafkaBroker, tmp_path: Path
) -> None:
    # A topic not created yet: the broker (which creates none by itself) acknowledges nothing,
    # so every call's event goes to the spool, until the topic exists.
    topic = f"later-{uuid.uuid4().hex[:12]}"
    port = free_port()
    settings = inference_settings(
        stack,
        tmp_path / "spool",
        shared=replace(stack.shared_as(DatabaseRole.INFERENCE), kafka_topic=topic),
        publish_timeout_s=0.5,
        spool_max_bytes=4096,
        health_port=port,
    )
    client = HealthClient(port)
    async with served(settings) as running:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            assert (await health(client))[0] == 200
            accepted = 0
            refused: grpc.aio.AioRpcError | None = None
            while refused is None and accepted < 200:
                try:
                    await stub.Predict(api.PredictRequest(student=student(f"full-{accepted}")))
                    accepted += 1
                except grpc.aio.AioRpcError as error:
                    refused = error
            assert refused is not None, "4 KiB of spool took 200 predictions"
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            assert f"the local spool is full ({accepted} events" in (refused.details() or "")
            code, detail = await health(client)
            print(
                f"\nspool of {settings.spool_max_bytes} B: {accepted} predictions accepted, "
                f"then refused; /health {code} {detail['state']!r} with "
                f"{detail['spool_bytes']} B in it"
            )
            assert (code, detail["state"], detail["spool_events"]) == (503, "spool full", accepted)

            await kafka.create_topic(topic, partitions=3)
            async with asyncio.timeout(120):
                while (await health(client))[1]["spool_events"]:  # noqa: ASYNC110 (polled)
                    await asyncio.sleep(0.2)
            code, detail = await health(client)
            assert (code, detail["state"]) == (200, "serving")
            await stub.Predict(api.PredictRequest(student=student("after-drain")), timeout=10)
        assert await topic_size(kafka.bootstrap_servers, topic) >= accepted + 1


async def test_microbatch_wait_0_gives_each_predict_its_own_publish(
    stack: Stack, tmp_path: Path
) -> None:
    publishes: dict[float, float] = {}
    for wait_ms in (5.0, 0.0):  # the default first: the count below does see batching
        # A publish timeout no loaded machine reaches: a spooled event would not be published.
        settings = inference_settings(
            stack,
            tmp_path / f"spool-{wait_ms:g}",
            microbatch_wait_ms=wait_ms,
            publish_timeout_s=60,
        )
        async with (
            served(settings) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            stub = api_grpc.PredictionServiceStub(channel)
            # Until the producer is connected, events go straight to the spool, unpublished.
            async with asyncio.timeout(60):
                while not running.publisher.kafka_connected:  # noqa: ASYNC110 (polled)
                    await asyncio.sleep(0.05)
            before = metric(running, "studentperf_inference_publish_duration_seconds_count")
            answers = await asyncio.gather(
                *(
                    stub.Predict(api.PredictRequest(student=student(f"mb-{i}")), timeout=60)
                    for i in range(CONCURRENT_CALLS)
                )
            )
            after = metric(running, "studentperf_inference_publish_duration_seconds_count")
            assert metric(running, "studentperf_inference_spooled_events_total") == 0
        assert len({a.prediction.prediction_id for a in answers}) == CONCURRENT_CALLS
        publishes[wait_ms] = after - before
    print(
        f"\n{CONCURRENT_CALLS} concurrent Predict calls: {publishes[5.0]:.0f} publishes with "
        f"MICROBATCH_WAIT_MS=5, {publishes[0.0]:.0f} with 0"
    )
    assert publishes[5.0] < CONCURRENT_CALLS, "micro-batching on, yet no call shared a publish"
    assert publishes[0.0] == CONCURRENT_CALLS


async def served_versions(running: RunningServer) -> tuple[str, str]:
    """The version a Predict used and then the one GetModelInfo names.

    Two calls, so a server that follows promotions may reload between them.
    """
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        answer = await stub.Predict(api.PredictRequest(student=student("poll-0")), timeout=10)
        info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=10)
    return str(answer.prediction.model_version), str(info.model_version)


async def test_model_poll_interval_0_serves_the_version_it_started_with(
    stack: Stack, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    old, new = train_version(models, 1, 1), train_version(models, 2, 2)
    set_current(models, old)
    fixed = inference_settings(
        stack, tmp_path / "spool-fixed", models_dir=str(models), model_poll_interval_s=0
    )
    following = inference_settings(
        stack, tmp_path / "spool-following", models_dir=str(models), model_poll_interval_s=0.2
    )
    async with served(fixed) as off, served(following) as on:
        assert off.reloader is None
        assert await served_versions(off) == (old, old)
        set_current(models, new)
        # The same folder, polled every 0.2 s: the promotion is there to be seen.
        async with asyncio.timeout(60):
            while (await served_versions(on))[0] != new:  # noqa: ASYNC110 (polled)
                await asyncio.sleep(0.1)
        assert await served_versions(on) == (new, new)
        await asyncio.sleep(3.0)  # 15 more polls of the other, 3 of a poller at the default 1 s
        assert await served_versions(off) == (old, old)


async def test_a_model_for_another_pass_mark_is_refused_at_start_up(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    service = ServiceProcess(
        "inference_service",
        {
            "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": stack.shared.kafka_bootstrap_servers,
            "STUDENTPERF_KAFKA_TOPIC": stack.topic,
            "STUDENTPERF_LISTEN_ADDRESS": address,
            "STUDENTPERF_MODELS_DIR": str(stack.model_path),  # trained for pass mark 50
            "STUDENTPERF_SPOOL_DIR": str(tmp_path / "spool"),
            "STUDENTPERF_PASS_MARK": "60",
            "STUDENTPERF_LOG_FORMAT": "text",
        },
        tmp_path / "inference.log",
    )
    service.start()
    try:
        # The port is bound only once the model is accepted: then it would serve the wrong one.
        async with asyncio.timeout(120):
            while service.process is not None and service.process.poll() is None:
                assert not port_open("127.0.0.1", port), "it serves a model for another pass mark"
                await asyncio.sleep(0.1)
        code = await service.wait_async()
    finally:
        await service.stop_async()
    logged = service.log_path.read_text()
    print(f"\nexit status {code}; {service.log_tail(1)}")
    assert code == 2, logged
    assert "cannot start" in logged
    assert "trained for pass mark 50, but STUDENTPERF_PASS_MARK is 60" in logged
    assert "listening on" not in logged

    # One version's folder rather than a models folder: refused the same way.
    version = resolve_version_dir(stack.model_path)
    settings = inference_settings(
        stack, tmp_path / "spool-version", models_dir=str(version), pass_mark=60.0
    )
    with pytest.raises(ModelArtifactError, match="trained for pass mark 50"):
        await start_server(settings)


async def test_a_listen_address_or_health_port_taken_by_another_server_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    # Held as another gRPC server holds it: gRPC's default is SO_REUSEPORT on, with which a
    # second server bound the same address too and the kernel split the connections between them.
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    spool = tmp_path / "spool"
    try:
        with pytest.raises(
            ConfigError, match=f"STUDENTPERF_LISTEN_ADDRESS: cannot listen on {address}"
        ):
            await start_server(inference_settings(stack, spool, listen_address=address))
        with pytest.raises(ConfigError, match="STUDENTPERF_INFERENCE_HEALTH_PORT: cannot listen"):
            await start_server(inference_settings(stack, spool, health_port=taken.getsockname()[1]))
    finally:
        taken.close()
    # Each refused start let go of the spool folder: the same process serves on it at once.
    async with served(inference_settings(stack, spool)) as running:
        assert running.port > 0


async def test_a_start_refused_for_its_health_port_lets_go_of_its_listen_address(
    stack: Stack, tmp_path: Path
) -> None:
    # One process, one listen address: a start stopped by a taken health port must not keep
    # the gRPC port it bound, or (SO_REUSEPORT off) the next start there is refused as taken.
    address = f"127.0.0.1:{free_port()}"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    spool = tmp_path / "spool"
    try:
        with pytest.raises(ConfigError, match="STUDENTPERF_INFERENCE_HEALTH_PORT: cannot listen"):
            await start_server(
                inference_settings(
                    stack, spool, listen_address=address, health_port=taken.getsockname()[1]
                )
            )
    finally:
        taken.close()
    async with served(inference_settings(stack, spool, listen_address=address)) as running:
        assert f"127.0.0.1:{running.port}" == address
