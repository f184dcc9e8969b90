"""Hostile input through a real channel: refused cleanly, nothing published, still serving."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from studentperf.config import DatabaseRole
from studentperf.largest_items import largest_student
from studentperf.limits import DEFAULT_MAX_BATCH_SIZE
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.student_pb2 import Student
from tests.integration.conftest import Stack, inference_settings
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


DEADLINE_S = 5.0  # time for a 3-student request to reach its handler, on any loaded machine


async def test_a_deadline_stops_the_work_of_its_call(stack: Stack, tmp_path: Path) -> None:
    # The server's topic does not exist yet, and the broker creates none by itself: a call's
    # publish waits for it until the test creates it. So the call is in flight as long as the
    # test wants, whatever the load, and only its deadline can end it.
    topic = f"{stack.topic}-late"
    settings = inference_settings(
        stack,
        tmp_path / "spool",
        shared=replace(stack.shared_as(DatabaseRole.INFERENCE), kafka_topic=topic),
        publish_timeout_s=300,  # not spooled either, while the test runs
    )
    running = await start_server(settings)
    try:
        await _cut_off_and_serve_on(running, stack, topic)
    finally:
        await running.stop(grace_s=5)


async def _cut_off_and_serve_on(running: RunningServer, stack: Stack, topic: str) -> None:
    connected = lambda: _value(int(running.publisher.kafka_connected))  # noqa: E731
    assert await eventually(connected, 1, timeout=60) == 1  # else the call would spool at once
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        batch = api.BatchPredictRequest(students=[student(f"d{i}") for i in range(3)])
        call = asyncio.ensure_future(stub.BatchPredict(batch, timeout=DEADLINE_S))
        in_flight = lambda: _value(running.core.in_flight)  # noqa: E731
        assert await eventually(in_flight, 1, timeout=DEADLINE_S) == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cut_off = lambda: _value(running.core.cut_off)  # noqa: E731
        assert await eventually(cut_off, 1, timeout=10) == 1
        assert running.core.in_flight == 0

        # Still serving; and the cut-off call's events were never sent: once the topic exists,
        # it holds the next call's event alone.
        await stack.kafka.create_topic(topic, partitions=3)
        answer = await stub.Predict(api.PredictRequest(student=student("after")), timeout=60)
        assert answer.prediction.prediction_id
        assert await topic_size(stack.shared.kafka_bootstrap_servers, topic) == 1


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
        max_request_bytes=64 * 1024,
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


# Requests that are not the message they claim to be: bytes the client sends as they are.
SERVICE = "/studentperf.v1.PredictionService/"
UNDECODABLE_METHODS = ("Predict", "BatchPredict", "RecordOutcomes")
# A string field that is not UTF-8: student_id (Predict: student.profile.student_id; a batch:
# students[0].profile.student_id; outcomes: outcomes[0].student_id).
NOT_UTF8 = {
    "Predict": b"\x0a\x06\x0a\x04\x0a\x02\xff\xfe",
    "BatchPredict": b"\x0a\x06\x0a\x04\x0a\x02\xff\xfe",
    "RecordOutcomes": b"\x0a\x04\x0a\x02\xff\xfe",
}
# A length-delimited field that claims 100 bytes and has 10.
TRUNCATED = b"\x0a\x64" + b"x" * 10
MESSAGES: dict[str, type[Message]] = {
    "Predict": api.PredictRequest,
    "BatchPredict": api.BatchPredictRequest,
    "RecordOutcomes": api.RecordOutcomesRequest,
}
TOKEN = "hostile-test-token-0123456789"
UNDECODABLE = "it could not be decoded (malformed protobuf, or a string that is not UTF-8)"


def random_garbage() -> bytes:
    """Random bytes that none of the three requests decodes from (checked here)."""
    rng = random.Random(14)
    while True:
        candidate = rng.randbytes(64)
        if all(_undecodable(message, candidate) for message in MESSAGES.values()):
            return candidate


def _undecodable(message: type[Message], data: bytes) -> bool:
    try:
        message.FromString(data)
    except DecodeError:
        return True
    return False


async def call_raw(
    channel: grpc.aio.Channel, method: str, payload: bytes, token: str | None = None
) -> grpc.aio.AioRpcError:
    """Sends `payload` as the request of `method`; returns the error it is refused with."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    call = channel.unary_unary(SERVICE + method)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(payload, timeout=10, metadata=metadata)
    return caught.value


def rpc_counts(running: RunningServer) -> dict[tuple[str, str], float]:
    assert running.status is not None
    return {
        (sample.labels["method"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(running.status.metrics())
        for sample in family.samples
        if sample.name == "studentperf_inference_rpc_duration_seconds_count"
    }


async def test_undecodable_requests_are_invalid_argument_and_counted(
    inference: RunningServer,
) -> None:
    garbage = random_garbage()
    before = rpc_counts(inference)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{inference.port}") as channel:
        for method in UNDECODABLE_METHODS:
            for payload in (NOT_UTF8[method], TRUNCATED, garbage):
                error = await call_raw(channel, method, payload)
                print(f"{method} {payload[:8]!r}...: {error.code().name}: {error.details()}")
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
                name = MESSAGES[method].DESCRIPTOR.full_name
                assert error.details() == f"the request is not a valid {name}: {UNDECODABLE}"
    after = rpc_counts(inference)
    for method in UNDECODABLE_METHODS:
        key = (method, "INVALID_ARGUMENT")
        assert after.get(key, 0) - before.get(key, 0) == 3


async def test_with_tokens_on_undecodable_requests_are_refused_before_any_parsing(
    stack: Stack, tmp_path: Path
) -> None:
    running = await start_server(
        InferenceSettings(
            shared=stack.shared,
            listen_address="127.0.0.1:0",
            model_path=str(stack.model_path),
            spool_dir=str(tmp_path / "spool"),
            auth_tokens=f"school {TOKEN} *\n",
        )
    )
    garbage = random_garbage()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            for method in UNDECODABLE_METHODS:
                for payload in (NOT_UTF8[method], garbage):
                    refused = await call_raw(channel, method, payload)
                    assert (refused.code(), refused.details()) == (
                        grpc.StatusCode.UNAUTHENTICATED,
                        "a bearer token is required",
                    )
                    invalid = await call_raw(channel, method, payload, TOKEN)
                    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert UNDECODABLE in (invalid.details() or "")
        counts = rpc_counts(running)
        print(counts)
        assert counts == {
            **{(method, "UNAUTHENTICATED"): 2 for method in UNDECODABLE_METHODS},
            **{(method, "INVALID_ARGUMENT"): 2 for method in UNDECODABLE_METHODS},
        }
    finally:
        await running.stop(1)


def padded(message: Message, total: int) -> bytes:
    """`message` serialized, with an unknown bytes field (number 15) making it `total` bytes."""
    data = message.SerializeToString()
    room = total - len(data) - 1  # the field's tag is one byte
    for length_bytes in (1, 2, 3):
        payload = room - length_bytes
        if payload < 128 ** (length_bytes - 1) or payload >= 128**length_bytes:
            continue
        padding = bytes([(15 << 3) | 2]) + _varint(payload) + b"p" * payload
        if len(data) + len(padding) == total:
            return data + padding
    raise ValueError(f"cannot pad {len(data)} bytes to {total}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


async def test_the_largest_valid_batch_fits_the_size_limit_and_a_byte_more_does_not(
    inference: RunningServer,
) -> None:
    largest = api.BatchPredictRequest(
        students=[largest_student(f"{i:064d}") for i in range(DEFAULT_MAX_BATCH_SIZE)]
    )
    outcomes = api.RecordOutcomesRequest(
        outcomes=[
            api.Outcome(student_id=f"{i:064d}", term="2026-" + "t" * 27, final_score=99.5)
            for i in range(DEFAULT_MAX_BATCH_SIZE)
        ]
    )
    limit = InferenceSettings().max_request_bytes
    print(
        f"largest valid BatchPredict: {largest.ByteSize():,} bytes, RecordOutcomes: "
        f"{outcomes.ByteSize():,} bytes; limit {limit:,} bytes"
    )
    assert outcomes.ByteSize() <= largest.ByteSize() < limit < largest.ByteSize() * 1.07
    # Exactly at the limit (the rest an unknown field, which the service drops): served.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{inference.port}",
        options=[("grpc.max_receive_message_length", 64 << 20)],
    ) as channel:
        call = channel.unary_unary(
            SERVICE + "BatchPredict", response_deserializer=api.BatchPredictResponse.FromString
        )
        reply = await call(padded(largest, limit), timeout=120)
        assert len(reply.results) == DEFAULT_MAX_BATCH_SIZE
        assert all(r.WhichOneof("result") == "prediction" for r in reply.results)
        error = await call_raw(channel, "BatchPredict", padded(largest, limit + 1))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        print(f"{limit + 1:,} bytes: {error.code().name}: {error.details()}")


async def test_millions_of_empty_students_are_refused_before_they_are_parsed(
    inference: RunningServer,
) -> None:
    # 8 million students of nothing, 16 MB: once parsed before any check, 400 MB of memory.
    empty_students = b"\x0a\x00" * 8_000_000
    async with grpc.aio.insecure_channel(f"127.0.0.1:{inference.port}") as channel:
        error = await call_raw(channel, "BatchPredict", empty_students)
    print(f"{len(empty_students):,} bytes: {error.code().name}: {error.details()}")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
