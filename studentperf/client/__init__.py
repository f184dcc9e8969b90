"""A typed client of the prediction service, for schools' backend services.

    from studentperf.client import StudentInput, connect

    with connect("127.0.0.1:50051") as client:
        answer = client.predict(StudentInput("s-1001", age=16, previous_gpa=3.1))
        print(answer.prediction.predicted_final_score)

Two flavours with the same methods: `connect` (blocking, grpc) and `studentperf.client.aio.connect`
(asyncio, grpc.aio): schools' backends are threaded web apps as often as asyncio services, and
wrapping one flavour in the other costs a thread or an event loop per call. Every rule lives in
shared modules (retry policy, chunking, request building, errors); the flavours differ only in
how they wait. Both take the proto messages or `StudentInput`, return the proto responses,
bound every call by a deadline (retries included), retry UNAVAILABLE only, with exponential
backoff and jitter, and raise `ServiceError` carrying the status code and the server's field
violations. `predict_many` splits any number of students over the server's batch and
request-size limits; when one of its calls fails it raises `PartlyAnswered`, with the answers
that came (recorded predictions).

Retrying and idempotency: GetModelInfo reads, and RecordOutcomes replaces a student's score for
a term, so retrying them is harmless. Predict and BatchPredict are not idempotent: the server
gives every prediction a fresh id and there is no request id to deduplicate by. UNAVAILABLE
mostly means the call never reached a handler (server not up, restarting, stopping) and the
retry is the first prediction made. A call refused because its events could not be made safe
("prediction not confirmed as recorded") may still have been recorded: the server marks it
(google.rpc.ErrorInfo reason MAY_BE_RECORDED, `ServiceError.reason`), and the client does not
retry such a Predict or BatchPredict, so no second prediction is recorded behind the caller's
back; `RetryPolicy(retry_may_be_recorded=True)` retries it anyway, where an answer matters more
than a second recorded prediction (different ids). A call cut off by a stopping server after
its grace (UNAVAILABLE or CANCELLED with no such mark) can also have been recorded: the
README's "Not promised". `retry=RetryPolicy.none()` turns retrying off.

This package imports only grpc, protobuf and `studentperf`'s shared modules: not the services.
"""

from studentperf.client._base import RetryEvent
from studentperf.client.errors import FieldViolation, PartlyAnswered, ServiceError
from studentperf.client.inputs import StudentInput, outcome
from studentperf.client.retry import RetryPolicy
from studentperf.client.sync import PredictionClient, connect

__all__ = [
    "FieldViolation",
    "PartlyAnswered",
    "PredictionClient",
    "RetryEvent",
    "RetryPolicy",
    "ServiceError",
    "StudentInput",
    "connect",
    "outcome",
]
