"""W3C trace context on the Kafka records, read back from the real topic.

Beside our `trace-id` header every event's record carries a `traceparent`, so a consumer that
speaks W3C trace context (OpenTelemetry's Kafka instrumentations) continues the request's trace:
the same trace id as the call's (the caller's, or the one made and returned in `x-trace-id`)
and a parent-id of the record's own. The header is checked here against the W3C rule itself,
not against our parser.
"""

from __future__ import annotations

import asyncio
import re

from aiokafka import AIOKafkaConsumer

from studentperf import envelope, tracing
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack
from tests.integration.helpers import student

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
# https://www.w3.org/TR/trace-context/#traceparent-header-field-values (version 00)
W3C = re.compile(r"00-(?P<trace>[0-9a-f]{32})-(?P<parent>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})")


async def records_of(stack: Stack, keys: set[str]) -> dict[str, dict[str, bytes | None]]:
    """The headers of the records keyed by `keys`, read from the topic's start."""
    consumer = AIOKafkaConsumer(
        stack.topic,
        bootstrap_servers=stack.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[str, dict[str, bytes | None]] = {}
    try:
        async with asyncio.timeout(60):
            while not keys <= found.keys():
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        key = (record.key or b"").decode()
                        if key in keys:
                            found[key] = dict(record.headers)
    finally:
        await consumer.stop()
    return found


def traceparent_of(headers: dict[str, bytes | None]) -> re.Match[str]:
    value = headers[envelope.TRACEPARENT_HEADER]
    assert value is not None
    parsed = W3C.fullmatch(value.decode())
    assert parsed is not None, value
    assert parsed["trace"] != "0" * 32 and parsed["parent"] != "0" * 16, value
    return parsed


async def test_a_callers_traceparent_is_continued_on_the_record(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack
) -> None:
    call = stub.Predict(
        api.PredictRequest(student=student("tc-w3c")),
        metadata=(("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"),),
    )
    await call
    [headers] = (await records_of(stack, {"tc-w3c"})).values()
    parsed = traceparent_of(headers)
    print(f"caller 00-{CALLER_TRACE}-{CALLER_SPAN}-01 -> record {parsed[0]}")
    assert parsed["trace"] == CALLER_TRACE
    assert headers[envelope.TRACE_ID_HEADER] == CALLER_TRACE.encode()
    # The record's span is a new one (a child in the trace), not the caller's.
    assert parsed["parent"] != CALLER_SPAN
    assert parsed["flags"] == "01"


async def test_a_made_trace_id_is_on_every_record_of_a_batch_and_an_outcome(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack
) -> None:
    batch = stub.BatchPredict(
        api.BatchPredictRequest(students=[student(f"tc-batch-{i}") for i in range(3)])
    )
    await batch
    trailing = dict(await batch.trailing_metadata() or ())
    made = str(trailing[tracing.TRACE_ID_KEY])
    outcome = stub.RecordOutcomes(
        api.RecordOutcomesRequest(
            outcomes=[api.Outcome(student_id="tc-outcome", term="2026-spring", final_score=60)]
        )
    )
    await outcome
    outcome_trace = str(dict(await outcome.trailing_metadata() or ())[tracing.TRACE_ID_KEY])

    keys = {f"tc-batch-{i}" for i in range(3)} | {"tc-outcome"}
    found = await records_of(stack, keys)
    parents = set()
    for key, headers in sorted(found.items()):
        parsed = traceparent_of(headers)
        print(f"{key}: traceparent {parsed[0]}")
        assert parsed["trace"] == (outcome_trace if key == "tc-outcome" else made)
        parents.add(parsed["parent"])
    assert len(parents) == len(keys)  # a span per record
