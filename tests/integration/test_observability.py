"""Metrics, trace ids and log lines, seen from outside the real services.

The services' /metrics endpoints are scraped over HTTP after real calls; trace ids are sent in
gRPC metadata and looked for in the `predictions` rows the recorder wrote from Kafka; log lines
are read from the output of the services run as processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from infra.bench.process import HealthClient
from infra.devstack import KafkaBroker, PostgresServer, free_port
from recorder_service.settings import Settings as RecorderSettings
from studentperf import tracing
from studentperf.config import SharedSettings
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import RecorderProcess, Stack, fresh_topic_and_database
from tests.integration.helpers import student
from tests.integration.processes import ServiceProcess

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text page: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(port: int) -> Samples:
    code, body = await asyncio.to_thread(HealthClient(port).get, "/metrics")
    assert code == 200
    return samples(body)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check.__name__}")
        await asyncio.sleep(0.1)


def inference_settings(stack: Stack, spool: Path, **changes: object) -> InferenceSettings:
    return InferenceSettings(
        shared=SharedSettings(
            kafka_bootstrap_servers=stack.shared.kafka_bootstrap_servers,
            kafka_topic=str(changes.pop("topic", stack.topic)),
            database_url=stack.database_url,
        ),
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(spool),
        **changes,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
async def served(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    settings = inference_settings(stack, tmp_path_factory.mktemp("spool"), health_port=free_port())
    running = await start_server(settings)

    async def kafka_connected() -> bool:
        return running.publisher.kafka_connected

    # Until then events go to the spool: the publish metrics would count nothing.
    await until(kafka_connected)
    yield running
    await running.stop(grace_s=5)


@pytest.fixture(scope="module")
async def observed_recorder(stack: Stack) -> AsyncIterator[RecorderProcess]:
    process = RecorderProcess(
        RecorderSettings(shared=stack.shared, batch_max_wait_ms=50, health_port=free_port())
    )
    process.start()
    yield process
    await process.stop()


@pytest.fixture(scope="module")
async def channel(served: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as opened:
        yield opened


def health_port(running: RunningServer) -> int:
    assert running.status_server is not None
    port: int = running.status_server.sockets[0].getsockname()[1]
    return port


async def trace_ids_of(db: asyncpg.Pool, prediction_ids: list[str]) -> dict[str, str | None]:
    """prediction id -> its row's trace id, once every one of them is recorded."""
    found: dict[str, str | None] = {}

    async def recorded() -> bool:
        rows = await db.fetch(
            "SELECT prediction_id::text, trace_id FROM predictions "
            "WHERE prediction_id = ANY($1::uuid[])",
            prediction_ids,
        )
        found.update({row["prediction_id"]: row["trace_id"] for row in rows})
        return len(found) == len(prediction_ids)

    await until(recorded)
    return found


# --- the inference service's metrics --------------------------------------------------------


async def test_calls_are_counted_by_method_and_code_and_predictions_by_version(
    served: RunningServer, channel: grpc.aio.Channel
) -> None:
    stub = api_grpc.PredictionServiceStub(channel)
    port = health_port(served)
    before = await scrape(port)
    answers = [
        (await stub.Predict(api.PredictRequest(student=student(f"m-{i}")), timeout=10)).prediction
        for i in range(3)
    ]
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Predict(api.PredictRequest(), timeout=10)  # no student
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    batch = await stub.BatchPredict(
        api.BatchPredictRequest(students=[student(f"mb-{i}") for i in range(4)]), timeout=10
    )
    answers += [result.prediction for result in batch.results]
    await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=10)
    after = await scrape(port)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    calls = "studentperf_inference_rpc_duration_seconds_count"
    assert grew(calls, method="Predict", code="OK") == 3
    assert grew(calls, method="Predict", code="INVALID_ARGUMENT") == 2
    assert grew(calls, method="BatchPredict", code="OK") == 1
    assert grew(calls, method="GetModelInfo", code="OK") == 1
    # The histogram's buckets hold every call: the +Inf bucket equals the count.
    assert value(
        after,
        "studentperf_inference_rpc_duration_seconds_bucket",
        method="Predict",
        code="OK",
        le="+Inf",
    ) == value(after, calls, method="Predict", code="OK")
    assert grew("studentperf_inference_rpc_duration_seconds_sum", method="Predict", code="OK") > 0

    [version] = {answer.model_version for answer in answers}
    assert grew("studentperf_inference_predictions_total", model_version=version) == 7
    passes = sum(answer.predicted_pass for answer in answers)
    assert grew("studentperf_inference_predicted_passes_total", model_version=version) == passes
    # Predict calls may share a publish (micro-batching): at least the batch's and one more.
    published = grew("studentperf_inference_publish_duration_seconds_count")
    assert 2 <= published <= 4
    assert grew("studentperf_inference_publish_failures_total") == 0
    assert value(after, "studentperf_inference_kafka_connected") == 1
    assert value(after, "studentperf_inference_spool_events") == 0


async def test_unavailable_calls_and_failed_publishes_are_counted(
    stack: Stack, tmp_path: Path
) -> None:
    # The topic does not exist and the broker does not create topics: nothing is acknowledged,
    # and the tiny spool fills at once.
    port = free_port()
    settings = inference_settings(
        stack,
        tmp_path,
        topic="no-such-topic",
        publish_timeout_s=0.5,
        spool_max_bytes=4096,
        health_port=port,
    )
    running = await start_server(settings)

    async def kafka_connected() -> bool:
        return running.publisher.kafka_connected

    try:
        await until(kafka_connected)  # so the first call tries Kafka, and fails
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as opened:
            stub = api_grpc.PredictionServiceStub(opened)
            await stub.Predict(api.PredictRequest(student=student("u-1")), timeout=10)
            batch = api.BatchPredictRequest(students=[student(f"u-{i}") for i in range(100)])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.BatchPredict(batch, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        found = await scrape(port)
    finally:
        await running.stop(grace_s=1)
    calls = "studentperf_inference_rpc_duration_seconds_count"
    assert value(found, calls, method="Predict", code="OK") == 1
    assert value(found, calls, method="BatchPredict", code="UNAVAILABLE") == 1
    assert value(found, "studentperf_inference_publish_failures_total") >= 1
    assert value(found, "studentperf_inference_spooled_events_total") == 1
    assert value(found, "studentperf_inference_spool_events") == 1
    assert value(found, "studentperf_inference_publish_duration_seconds_count") == 0


# --- trace ids, from the call to the row ----------------------------------------------------


def _ids(metadata: grpc.aio.Metadata | None) -> dict[str, str]:
    keys = (tracing.REQUEST_ID_KEY, tracing.TRACE_ID_KEY)
    return {k: str(v) for k, v in (metadata or ()) if k in keys}


@pytest.mark.usefixtures("observed_recorder")
async def test_a_trace_id_sent_in_metadata_is_recorded_with_the_predictions(
    channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    stub = api_grpc.PredictionServiceStub(channel)
    plain = stub.Predict(
        api.PredictRequest(student=student("t-plain")), metadata=(("x-trace-id", TRACE),)
    )
    by_plain = (await plain).prediction.prediction_id
    other = "0af7651916cd43dd8448eb211c80319c"
    w3c = stub.Predict(
        api.PredictRequest(student=student("t-w3c")),
        metadata=(("traceparent", f"00-{other}-b7ad6b7169203331-01"),),
    )
    by_w3c = (await w3c).prediction.prediction_id
    batch_trace = "ab" * 16
    batch = stub.BatchPredict(
        api.BatchPredictRequest(students=[student(f"t-batch-{i}") for i in range(5)]),
        metadata=(("x-trace-id", batch_trace),),
    )
    by_batch = [result.prediction.prediction_id for result in (await batch).results]

    assert _ids(await plain.trailing_metadata())["x-trace-id"] == TRACE
    assert _ids(await w3c.trailing_metadata())["x-trace-id"] == other
    assert _ids(await batch.trailing_metadata())["x-trace-id"] == batch_trace
    stored = await trace_ids_of(db, [by_plain, by_w3c, *by_batch])
    assert stored[by_plain] == TRACE
    assert stored[by_w3c] == other
    assert {stored[pid] for pid in by_batch} == {batch_trace}


@pytest.mark.usefixtures("observed_recorder")
async def test_a_made_trace_id_is_returned_and_is_the_rows(
    channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    stub = api_grpc.PredictionServiceStub(channel)
    untraced = stub.Predict(api.PredictRequest(student=student("t-none")))
    # Not a trace id (upper case): the call goes ahead with a new one.
    malformed = stub.Predict(
        api.PredictRequest(student=student("t-bad")), metadata=(("x-trace-id", TRACE.upper()),)
    )
    answers = [
        (await untraced).prediction.prediction_id,
        (await malformed).prediction.prediction_id,
    ]
    returned = [_ids(await call.trailing_metadata()) for call in (untraced, malformed)]
    for ids in returned:
        assert tracing.valid_trace_id(ids["x-trace-id"]) and ids["x-trace-id"] != TRACE
        assert tracing.valid_trace_id(ids["x-request-id"])
    assert returned[0]["x-trace-id"] != returned[1]["x-trace-id"]
    stored = await trace_ids_of(db, answers)
    assert [stored[pid] for pid in answers] == [ids["x-trace-id"] for ids in returned]


async def test_a_refused_call_still_returns_its_ids(channel: grpc.aio.Channel) -> None:
    stub = api_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Predict(api.PredictRequest(), metadata=(("x-trace-id", TRACE),), timeout=10)
    trailing = refused.value.trailing_metadata()
    assert _ids(trailing)["x-trace-id"] == TRACE
    # The rich error details are still there beside them.
    assert any(key == "grpc-status-details-bin" for key, _ in trailing or ())


# --- the recorder's metrics -----------------------------------------------------------------


async def test_recorder_metrics_show_batches_writes_and_lag_going_to_zero(
    observed_recorder: RecorderProcess, channel: grpc.aio.Channel, db: asyncpg.Pool
) -> None:
    port = observed_recorder.settings.health_port
    stub = api_grpc.PredictionServiceStub(channel)
    answer = await stub.BatchPredict(
        api.BatchPredictRequest(students=[student(f"r-{i}") for i in range(60)]), timeout=10
    )
    await trace_ids_of(db, [r.prediction.prediction_id for r in answer.results])
    found: Samples = {}

    async def caught_up() -> bool:
        found.update(await scrape(port))
        lags = {
            labels: v
            for (name, labels), v in found.items()
            if name == "studentperf_recorder_consumer_lag"
        }
        # One gauge per partition of the topic (3), each at 0 once every batch is committed.
        return len(lags) == 3 and set(lags.values()) == {0.0}

    await until(caught_up)
    stored = value(found, "studentperf_recorder_events_stored_total")
    assert stored >= 60
    assert value(found, "studentperf_recorder_batch_size_count") >= 1
    # Every event read went through a batch; none were refused or seen twice here.
    assert value(found, "studentperf_recorder_batch_size_sum") == stored + value(
        found, "studentperf_recorder_events_already_stored_total"
    )
    assert value(found, "studentperf_recorder_write_duration_seconds_count") >= 1
    assert value(found, "studentperf_recorder_write_duration_seconds_sum") > 0
    assert value(found, "studentperf_recorder_state", state="running") == 1


# --- log lines ------------------------------------------------------------------------------


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"nothing logged to {path}"
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    for line in parsed:
        assert {"time", "level", "logger", "message"} <= set(line), line
    return parsed


async def test_the_services_log_json_lines_with_the_call_ids(
    kafka: KafkaBroker, postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> None:
    name = await fresh_topic_and_database(kafka, postgres, "l")
    address = f"127.0.0.1:{free_port()}"
    shared = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": name,
        "STUDENTPERF_DATABASE_URL": postgres.dsn(name),
        "STUDENTPERF_LOG_LEVEL": "INFO",
    }
    inference = ServiceProcess(
        "inference_service",
        {
            **shared,
            "STUDENTPERF_LISTEN_ADDRESS": address,
            "STUDENTPERF_MODELS_DIR": str(model_path),
            "STUDENTPERF_SPOOL_DIR": str(tmp_path / "spool"),
        },
        tmp_path / "inference.log",
    )
    recorder = ServiceProcess(
        "recorder_service", {**shared, "STUDENTPERF_BATCH_MAX_WAIT_MS": "50"}, tmp_path / "rec.log"
    )
    inference.start()
    recorder.start()
    try:
        async with grpc.aio.insecure_channel(address) as opened:
            stub = api_grpc.PredictionServiceStub(opened)
            call = stub.Predict(
                api.PredictRequest(student=student("log-1")),
                metadata=(("x-trace-id", "not-a-trace-id"),),
                timeout=60,
                wait_for_ready=True,  # the process is still starting
            )
            prediction_id = (await call).prediction.prediction_id
            ids = _ids(await call.trailing_metadata())
        pool = await asyncpg.create_pool(postgres.dsn(name), min_size=1, max_size=1)
        try:
            stored = await trace_ids_of(pool, [prediction_id])
        finally:
            await pool.close()
        assert stored[prediction_id] == ids["x-trace-id"]
    finally:
        await inference.stop_async()
        await recorder.stop_async()
    lines = json_lines(tmp_path / "inference.log")
    [warning] = [line for line in lines if "malformed x-trace-id" in str(line["message"])]
    assert warning["level"] == "WARNING" and warning["logger"] == "inference_service.grpc_errors"
    assert (warning["request_id"], warning["trace_id"]) == (ids["x-request-id"], ids["x-trace-id"])
    started = [line for line in lines if str(line["message"]).startswith("listening on")]
    assert started and "request_id" not in started[0]
    recorder_lines = json_lines(tmp_path / "rec.log")
    assert any(str(line["message"]).startswith("partitions assigned") for line in recorder_lines)
