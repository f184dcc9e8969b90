"""How the services behave at their edges: broker not taking events, shutdown, bad records."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer

from inference_service.server import YOUNG_GC_THRESHOLD, start_server
from inference_service.settings import Settings as InferenceSettings
from infra.bench.process import HealthClient
from infra.devstack import free_port
from studentperf import envelope
from studentperf.config import SharedSettings
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import Stack
from tests.integration.helpers import count_rows, eventually, student, topic_size


def settings_for(stack: Stack, spool: Path, **changes: object) -> InferenceSettings:
    shared = SharedSettings(
        kafka_bootstrap_servers=stack.shared.kafka_bootstrap_servers,
        kafka_topic=str(changes.pop("topic", stack.topic)),
        database_url=stack.database_url,
    )
    return InferenceSettings(
        shared=shared,
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(spool),
        **changes,  # type: ignore[arg-type]
    )


async def test_unacknowledged_events_are_spooled_and_the_call_answers(
    stack: Stack, tmp_path: Path
) -> None:
    # The topic does not exist and the broker does not create topics: nothing is acknowledged.
    port = free_port()
    settings = settings_for(
        stack, tmp_path, topic="no-such-topic", publish_timeout_s=0.5, health_port=port
    )
    running = await start_server(settings)
    status = HealthClient(port)
    try:
        assert (await asyncio.to_thread(status.get, "/health"))[0] == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            answer = await stub.Predict(api.PredictRequest(student=student("s1")), timeout=10)
        assert answer.prediction.prediction_id
        assert running.publisher.spool.records == 1
        # The spool's depth is visible to an operator while Kafka does not take the events.
        code, body = await asyncio.to_thread(status.get, "/health")
        assert code == 200
        detail = json.loads(body)
        assert isinstance(detail["kafka_connected"], bool)
        assert detail | {"spool_bytes": 0, "kafka_connected": None} == {
            "state": "spooling",
            "kafka_connected": None,
            "spool_events": 1,
            "spool_bytes": 0,
            "spool_max_bytes": settings.spool_max_bytes,
            "spool_set_aside_events": 0,
            "spool_damaged_bytes": 0,
            "calls_in_flight": 0,
            "model_version": answer.prediction.model_version,
        }
        metrics = (await asyncio.to_thread(status.get, "/metrics"))[1]
        assert "studentperf_inference_spool_events 1.0" in metrics.splitlines()
    finally:
        await running.stop(grace_s=1)
    assert list(tmp_path.glob("*.spool")), "the spooled event outlives the process"


async def test_a_full_spool_refuses_predictions_with_unavailable(
    stack: Stack, tmp_path: Path
) -> None:
    settings = settings_for(
        stack, tmp_path, topic="no-such-topic", publish_timeout_s=0.5, spool_max_bytes=4096
    )
    running = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            batch = api.BatchPredictRequest(students=[student(f"f{i}") for i in range(100)])
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.BatchPredict(batch, timeout=10)
    finally:
        await running.stop(grace_s=1)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "spool is full" in (caught.value.details() or "")


async def test_graceful_stop_finishes_in_flight_calls(stack: Stack, tmp_path: Path) -> None:
    older = gc.get_threshold()[1:]
    running = await start_server(settings_for(stack, tmp_path))
    # Serving, the youngest generation is collected less often; the older ones as before.
    assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *older)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        batch = api.BatchPredictRequest(students=[student(f"g-{i}") for i in range(5000)])
        in_flight = [asyncio.ensure_future(stub.BatchPredict(batch, timeout=30)) for _ in range(4)]
        # Every call has reached the handler (in flight, or already answered: on a loaded
        # machine the first may finish before the last arrives) and some are still running.
        async with asyncio.timeout(20):
            while not (  # noqa: ASYNC110 (no event marks arrivals)
                running.core.in_flight >= 1
                and running.core.in_flight + sum(f.done() for f in in_flight) == 4
            ):
                await asyncio.sleep(0.001)
        await running.stop(grace_s=20)
        answers = await asyncio.gather(*in_flight, return_exceptions=True)
        assert [type(a).__name__ for a in answers] == ["BatchPredictResponse"] * 4
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Predict(api.PredictRequest(student=student("late")), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.usefixtures("recorder")
async def test_recorder_skips_records_that_are_not_events_and_keeps_going(
    stack: Stack, db: asyncpg.Pool
) -> None:
    before = await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)
    valid = []
    for i in range(2):
        pid = str(uuid.uuid4())
        event = PredictionEvent(
            schema_version=envelope.SCHEMA_VERSION,
            event_id=pid,
            input=student(f"poison-neighbour-{i}"),
            prediction=api.Prediction(
                prediction_id=pid, model_version="hand-made", pass_mark=50, pass_probability=0.5
            ),
        )
        event.occurred_at.GetCurrentTime()
        valid.append(envelope.encode(event))
    producer = AIOKafkaProducer(bootstrap_servers=stack.shared.kafka_bootstrap_servers)
    await producer.start()
    try:
        for value, key in [
            (valid[0].value, b"poison-neighbour-0"),
            (b"\x00not protobuf", b"poison-neighbour-0"),
            (PredictionEvent(schema_version=99).SerializeToString(), b"poison-neighbour-0"),
            (valid[1].value, b"poison-neighbour-0"),
        ]:
            await producer.send_and_wait(stack.topic, value=value, key=key)
    finally:
        await producer.stop()
    assert await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic) == before + 4
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE model_version = 'hand-made'")
    assert await eventually(probe, 2, timeout=15) == 2
