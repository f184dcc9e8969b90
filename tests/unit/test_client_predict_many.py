"""predict_many against a real grpc.aio server with the service's default limits and servicer
(the model and the publisher are test_core's stand-ins), through both clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from inference_service.core import PredictionCore, PublishUnavailable
from inference_service.servicer import PredictionServicer, add_to_server
from studentperf.client import PartlyAnswered, aio, connect
from studentperf.envelope import KafkaRecord
from studentperf.largest_items import largest_student
from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
)
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1.student_pb2 import Student
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
