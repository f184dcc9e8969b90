"""The client does not retry a Predict whose predictions the server says may be recorded: the
retry would record a second prediction beside the first, and the caller would never know.

The publisher stands in for the real one when a send times out and the spool cannot take it:
the event is still in the producer and lands later (recorded), yet the call fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from inference_service.core import PredictionCore, PublishUnavailable
from inference_service.servicer import PredictionServicer, add_to_server
from studentperf.client import RetryPolicy, ServiceError, StudentInput, aio
from studentperf.envelope import KafkaRecord
from studentperf.error_reasons import MAY_BE_RECORDED
from studentperf.v1 import prediction_service_pb2 as api
from tests.unit.test_core import AgeModel


class LandsLater:
    """While `failing`, a publish fails once after its records reached the log."""

    def __init__(self) -> None:
        self.records: list[KafkaRecord] = []
        self.failing = True

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        self.records.extend(records)
        if self.failing:
            self.failing = False
            raise PublishUnavailable("the Kafka broker did not acknowledge 1 event(s) within 2 s")


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, LandsLater]]:
    publisher = LandsLater()
    core = PredictionCore(AgeModel(), publisher, max_batch_size=100)
    server = grpc.aio.server()
    add_to_server(PredictionServicer(core), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", publisher
    finally:
        await server.stop(None)


async def test_a_prediction_that_may_be_recorded_is_not_made_again(
    served: tuple[str, LandsLater],
) -> None:
    target, publisher = served
    async with aio.connect(target) as client:  # the defaults a school's backend would use
        with pytest.raises(ServiceError) as failed:
            await client.predict(StudentInput("s-1001", age=16))
        assert failed.value.reason == MAY_BE_RECORDED and failed.value.attempts == 1
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        assert len(publisher.records) == 1  # the one the caller was told may be recorded

        publisher.failing = True
        with pytest.raises(ServiceError) as batch_failed:
            await client.batch_predict([StudentInput("s-1002", age=16)])
        assert batch_failed.value.attempts == 1 and len(publisher.records) == 2

        # Outcomes are safe to retry: the same scores, again.
        publisher.failing = True
        reply = await client.record_outcomes(
            [api.Outcome(student_id="s-1001", term="2026-spring", final_score=70)]
        )
        assert reply.results[0].WhichOneof("result") == "stored"


async def test_a_caller_may_choose_availability_over_a_second_record(
    served: tuple[str, LandsLater],
) -> None:
    target, publisher = served
    policy = RetryPolicy(retry_may_be_recorded=True)
    async with aio.connect(target, retry=policy) as client:
        answer = await client.predict(StudentInput("s-1001", age=16))
    assert answer.prediction.prediction_id and len(publisher.records) == 2
