"""A batch inside every request limit is answered item by item, over a real grpc.aio server with
the service's default limits (the model and the publisher are test_core's stand-ins).

Refusals used to grow past the response limit: a student breaking every rule was answered with
1,742 bytes (each rule twice), so 10,000 of them, a 790 kB request, got RESOURCE_EXHAUSTED for
the whole call, after the batch's valid students were published; and n copies of one outcome
were each refused naming all the others, n^2 characters built on the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from inference_service.core import PredictionCore
from inference_service.outcomes import encode_outcomes
from inference_service.servicer import PredictionServicer, add_to_server
from studentperf.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
)
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.student_pb2 import Student, StudentProfile
from tests.unit.test_core import AgeModel, RecordingPublisher
from tests.unit.test_limits import WORST_STUDENT

VALID = Student(profile=StudentProfile(student_id="valid-1", age=16))


class Served:
    def __init__(
        self, stub: api_grpc.PredictionServiceAsyncStub, publisher: RecordingPublisher
    ) -> None:
        self.stub = stub
        self.publisher = publisher


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    publisher = RecordingPublisher()
    core = PredictionCore(AgeModel(), publisher, max_batch_size=DEFAULT_MAX_BATCH_SIZE)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", DEFAULT_MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ]
    )
    add_to_server(PredictionServicer(core), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}",
            options=[("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES)],
        ) as channel:
            yield Served(api_grpc.PredictionServiceStub(channel), publisher)
    finally:
        await server.stop(None)


async def test_a_full_batch_of_students_breaking_every_rule_is_answered_item_by_item(
    served: Served,
) -> None:
    request = api.BatchPredictRequest(students=[WORST_STUDENT] * 9_700 + [VALID] * 300)
    assert request.ByteSize() < DEFAULT_MAX_REQUEST_BYTES
    reply = await served.stub.BatchPredict(request, timeout=120)
    kinds = [result.WhichOneof("result") for result in reply.results]
    assert kinds == ["error"] * 9_700 + ["prediction"] * 300
    assert len(served.publisher.records) == 300
    error = reply.results[0].error
    assert len(error.bad_request.field_violations) == 9
    assert error.message.endswith("; and 7 more (bad_request names each)")
    assert error.message.startswith("invalid student: students[0].profile.student_id: required")


async def test_copies_of_one_outcome_are_refused_in_answers_that_grow_with_their_number(
    served: Served,
) -> None:
    copies = 4_000
    one = api.Outcome(student_id="a", term="2026-a", final_score=1.0)
    answers = encode_outcomes([one] * copies)
    # Listing every other copy made 4,000 copies 500 MB of text.
    assert sum(len(str(answer)) for answer in answers) < copies * 200
    assert str(answers[5]) == (
        "outcomes[5]: the same student and term as outcomes[0] and 3998 more: send each once"
    )
    assert str(answers[0]).startswith("outcomes[0]: the same student and term as outcomes[1] and")
    assert "as outcomes[1]: send" in str(encode_outcomes([one] * 2)[0])

    reply = await served.stub.RecordOutcomes(
        api.RecordOutcomesRequest(outcomes=[one] * copies), timeout=120
    )
    assert [r.WhichOneof("result") for r in reply.results] == ["error"] * copies
    assert served.publisher.records == []
