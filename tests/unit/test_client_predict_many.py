"""predict_many against a real grpc.aio server with the service's default limits and servicer
(the model and the publisher are test_core's stand-ins), through both clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from inference_service.core import PredictionCore, PublishUnavailable
from inference_service.servicer import PredictionServicer, add_to_server
from inference_service.settings import Settings
from studentperf.client import PartlyAnswered, ServiceError, aio, connect
from studentperf.client.aio import AsyncPredictionClient
from studentperf.client.sync import PredictionClient
from studentperf.envelope import KafkaRecord
from studentperf.largest_items import largest_student
from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
)
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1.student_pb2 import Student, StudentProfile
from tests.unit.test_core import AgeModel, RecordingPublisher


class FailsAfter(RecordingPublisher):
    """Takes the first `accept` events, then cannot (the broker away, the spool full)."""

    def __init__(self, accept: int) -> None:
        super().__init__()
        self.accept = accept

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        if len(self.records) >= self.accept:
            raise PublishUnavailable("the Kafka broker did not acknowledge; the spool is full")
        await super().publish(records)


async def serve(publisher: RecordingPublisher) -> tuple[grpc.aio.Server, str]:
    core = PredictionCore(AgeModel(), publisher, max_batch_size=DEFAULT_MAX_BATCH_SIZE)
    server = grpc.aio.server(
        options=[  # as inference_service.server sets them by default
            ("grpc.max_receive_message_length", DEFAULT_MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ]
    )
    add_to_server(PredictionServicer(core), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server, address = await serve(RecordingPublisher())
    try:
        yield address
    finally:
        await server.stop(None)


def roster() -> list[Student]:
    """10,000 full students, every tenth with a 200-character id (a school's composite key),
    which the server refuses for that student alone: in one request, over the size limit."""
    students = []
    for i in range(DEFAULT_MAX_BATCH_SIZE):
        student_id = f"r{i:06d}".ljust(64, "x")
        students.append(largest_student(student_id.ljust(200, "y") if i % 10 == 9 else student_id))
    assert api.BatchPredictRequest(students=students).ByteSize() > DEFAULT_MAX_REQUEST_BYTES
    return students


def kinds(results: Sequence[api.BatchPredictResult | None]) -> list[str | None]:
    return [None if r is None else r.WhichOneof("result") for r in results]


async def test_a_list_over_the_request_size_limit_is_answered_student_by_student(
    target: str,
) -> None:
    students = roster()
    expected = ["error" if i % 10 == 9 else "prediction" for i in range(len(students))]
    async with aio.connect(target, default_deadline_s=120) as client:
        results = await client.predict_many(students)
    assert kinds(results) == expected
    assert results[9999].error.bad_request.field_violations[0].field == (
        "students[9999].profile.student_id"
    )

    def blocking() -> list[api.BatchPredictResult]:
        with connect(target, default_deadline_s=120) as client:
            return client.predict_many(students)

    assert kinds(await asyncio.to_thread(blocking)) == expected


async def test_a_failed_call_hands_back_every_answer_that_came() -> None:
    """The first 100 students' predictions are recorded, then publishing fails: the caller must
    learn which, or predicting the list again records them twice."""
    students = [largest_student(f"g{i:06d}") for i in range(300)]
    publisher = FailsAfter(accept=100)
    server, address = await serve(publisher)
    try:
        async with aio.connect(address, default_deadline_s=30) as client:
            with pytest.raises(PartlyAnswered) as failed:
                await client.predict_many(students, batch_size=100, concurrency=1)

        def blocking() -> None:
            publisher.accept = len(publisher.records) + 100
            with connect(address, default_deadline_s=30) as client:
                client.predict_many(students, batch_size=100, concurrency=1)

        with pytest.raises(PartlyAnswered) as failed_blocking:
            await asyncio.to_thread(blocking)
    finally:
        await server.stop(None)
    for error in (failed.value, failed_blocking.value):
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert kinds(error.results) == ["prediction"] * 100 + [None] * 200
        assert error.answered == 100
    assert len(publisher.records) == 200  # what the two answered, and nothing else


async def test_a_server_with_a_smaller_batch_limit_answers_student_by_student() -> None:
    """The server's request limit follows its batch limit: so must the client's split."""
    batch = 1_000
    settings = Settings.from_env({"STUDENTPERF_MAX_BATCH_SIZE": str(batch)})
    core = PredictionCore(AgeModel(), RecordingPublisher(), max_batch_size=batch)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
    )
    add_to_server(PredictionServicer(core), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    students = roster()[:batch]
    assert api.BatchPredictRequest(students=students).ByteSize() > settings.max_request_bytes
    try:
        async with aio.connect(f"127.0.0.1:{port}", default_deadline_s=60) as client:
            results = await client.predict_many(students, batch_size=batch)
    finally:
        await server.stop(None)
    assert kinds(results) == ["error" if i % 10 == 9 else "prediction" for i in range(batch)]


SHORT = [Student(profile=StudentProfile(student_id=f"s{i}")) for i in range(30)]


def short_answer(students: Sequence[Student]) -> api.BatchPredictResponse:
    """The second chunk is answered one result short: refused, not shifted onto others."""
    answered = len(students) - (students[0].profile.student_id == "s10")
    return api.BatchPredictResponse(
        results=[api.BatchPredictResult(prediction=api.Prediction()) for _ in range(answered)]
    )


async def test_a_chunk_answered_short_is_refused_and_the_rest_handed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def batch_predict(
        self: object, students: Sequence[Student], **_: object
    ) -> api.BatchPredictResponse:
        await asyncio.sleep(0)
        return short_answer(students)

    monkeypatch.setattr(AsyncPredictionClient, "batch_predict", batch_predict)
    monkeypatch.setattr(
        PredictionClient, "batch_predict", lambda self, students, **_: short_answer(students)
    )
    async with aio.connect("127.0.0.1:1") as client:
        with pytest.raises(PartlyAnswered) as failed:
            await client.predict_many(SHORT, batch_size=10, concurrency=1)
    with connect("127.0.0.1:1") as blocking, pytest.raises(PartlyAnswered) as failed_blocking:
        blocking.predict_many(SHORT, batch_size=10, concurrency=1)
    for error in (failed.value, failed_blocking.value):
        assert "answered 9 results for 10 students" in error.message
        # The third chunk is not sent once the second failed.
        assert kinds(error.results) == ["prediction"] * 10 + [None] * 20


def test_the_blocking_client_starts_no_call_after_one_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two at a time: the first call is slow, the second fails at once; the pool's thread that
    ran the second must not go on to the third (the results loop is still waiting on the
    first)."""
    students = [Student(profile=StudentProfile(student_id=f"s{i}")) for i in range(60)]
    made: list[str] = []
    lock = threading.Lock()
    second_failed = threading.Event()

    def batch_predict(
        self: object, chunk: Sequence[Student], **_: object
    ) -> api.BatchPredictResponse:
        first = chunk[0].profile.student_id
        with lock:
            made.append(first)
        if first == "s0":
            second_failed.wait(30)  # slow, until the other call has failed
        if first == "s10":
            second_failed.set()
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "the spool is full")
        return api.BatchPredictResponse(
            results=[api.BatchPredictResult(prediction=api.Prediction()) for _ in chunk]
        )

    monkeypatch.setattr(PredictionClient, "batch_predict", batch_predict)
    with connect("127.0.0.1:1") as client, pytest.raises(PartlyAnswered) as failed:
        client.predict_many(students, batch_size=10, concurrency=2)
    assert sorted(made) == ["s0", "s10"], f"calls made after the failure: {made}"
    assert failed.value.answered == 10
