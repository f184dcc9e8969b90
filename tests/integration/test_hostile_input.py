"""Hostile input through a real channel: refused cleanly, nothing published, still serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.student_pb2 import Student
from tests.integration.conftest import Stack
from tests.integration.helpers import eventually, student, topic_size
from tests.unit.test_encoding_properties import students

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


def hostile_calls(address: str) -> tuple[int, list[str]]:
    """Runs the property test on a plain (blocking) channel; returns predictions made."""
    predicted = 0
    unexpected: list[str] = []
    with grpc.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(students(), max_size=12), st.booleans())
        def call(batch: list[Student], single: bool) -> None:
            nonlocal predicted
            try:
                if single and batch:
                    stub.Predict(api.PredictRequest(student=batch[0]), timeout=10)
                    predicted += 1
                    return
                reply = stub.BatchPredict(api.BatchPredictRequest(students=batch), timeout=10)
            except grpc.RpcError as error:
                if error.code() not in ALLOWED:
                    unexpected.append(f"{error.code()}: {error.details()}")
                return
            assert len(reply.results) == len(batch)
            for result in reply.results:
                if result.WhichOneof("result") == "prediction":
                    predicted += 1
                else:
                    assert result.error.bad_request.field_violations

        call()
    return predicted, unexpected


@pytest.mark.usefixtures("recorder")
# The server in this process draws from `random` (aiokafka picks brokers) while Hypothesis
# generates in the client's thread; the generated data does not depend on it.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_every_hostile_request_is_answered_or_refused_and_only_answers_publish(
    inference: RunningServer, stack: Stack
) -> None:
    before = await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)
    # The blocking client runs in a thread so this loop goes on serving it.
    predicted, unexpected = await asyncio.to_thread(hostile_calls, f"127.0.0.1:{inference.port}")
    assert unexpected == []
    published = lambda: topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)  # noqa: E731
    assert await eventually(published, before + predicted, timeout=10) == before + predicted


async def test_a_deadline_stops_the_work_of_its_call(
    inference: RunningServer, stub: api_grpc.PredictionServiceStub
) -> None:
    cut_off_before = inference.core.cut_off
    big = api.BatchPredictRequest(students=[student(f"d{i}") for i in range(10_000)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchPredict(big, timeout=0.05)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    cut_off = lambda: _value(inference.core.cut_off)  # noqa: E731
    assert await eventually(cut_off, cut_off_before + 1, timeout=10) == cut_off_before + 1
    answer = await stub.Predict(api.PredictRequest(student=student("after")), timeout=10)
    assert answer.prediction.prediction_id


async def _value(number: int) -> int:
    return number


@pytest.fixture(scope="module")
async def small_server(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[api_grpc.PredictionServiceStub]:
    settings = InferenceSettings(
        shared=stack.shared,
        listen_address="127.0.0.1:0",
        model_path=str(stack.model_path),
        spool_dir=str(tmp_path_factory.mktemp("spool")),
        max_batch_size=50,
        max_message_bytes=64 * 1024,
    )
    running = await start_server(settings)
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{running.port}",
        options=[("grpc.max_send_message_length", 8 << 20)],
    ) as channel:
        yield api_grpc.PredictionServiceStub(channel)
    await running.stop(grace_s=1)


async def test_batches_at_the_limit_pass_and_over_it_are_refused(
    small_server: api_grpc.PredictionServiceStub,
) -> None:
    at_limit = [student(f"l{i}") for i in range(50)]
    reply = await small_server.BatchPredict(api.BatchPredictRequest(students=at_limit), timeout=10)
    assert len(reply.results) == 50
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await small_server.BatchPredict(
            api.BatchPredictRequest(students=[*at_limit, student("one-more")]), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 50 students per call, got 51" in (caught.value.details() or "")


async def test_messages_over_the_size_limit_are_resource_exhausted(
    small_server: api_grpc.PredictionServiceStub,
) -> None:
    huge = api.PredictRequest(student=student("x"))
    huge.student.profile.student_id = "x" * (200 * 1024)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await small_server.Predict(huge, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 5
    still = await small_server.Predict(api.PredictRequest(student=student("y")), timeout=10)
    assert still.prediction.prediction_id
