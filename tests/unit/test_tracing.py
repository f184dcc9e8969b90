"""Trace and request ids: taking them from metadata, carrying them in events and log lines."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from inference_service.core import PredictionCore
from inference_service.spool import Destination, Spool
from recorder_service.rows import STAGING_COLUMNS
from recorder_service.triage import triage
from studentperf import envelope, tracing
from studentperf.config import ConfigError, configure_logging
from studentperf.envelope import KafkaRecord
from studentperf.log_format import JsonFormatter, TextFormatter
from studentperf.v1.erasure_event_pb2 import ErasureEvent
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import Outcome, Prediction
from studentperf.v1.student_pb2 import Student, StudentProfile
from tests.unit.test_core import AgeModel, RecordingPublisher
from tests.unit.test_core import student as unit_student

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_new_ids_are_valid_trace_ids_and_differ() -> None:
    made = {tracing.new_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(tracing.valid_trace_id(i) for i in made)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01")], TRACE),
        ([("x-trace-id", TRACE)], TRACE),
        # traceparent is the standard: it wins over x-trace-id.
        ([("x-trace-id", "a" * 32), ("traceparent", f"00-{TRACE}-00f067aa0ba902b7-00")], TRACE),
    ],
)
def test_a_valid_trace_id_is_taken(metadata: list[tuple[str, str]], expected: str) -> None:
    assert tracing.trace_id_from_metadata(metadata) == (expected, "")


@pytest.mark.parametrize(
    "metadata",
    [
        [("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01")],
        [("traceparent", f"ff-{TRACE}-00f067aa0ba902b7-01")],
        [("traceparent", f"00-{TRACE.upper()}-00f067aa0ba902b7-01")],
        [("traceparent", "garbage")],
        [("x-trace-id", TRACE.upper())],
        [("x-trace-id", TRACE[:-1])],
        [("x-trace-id", "0" * 32)],
        [("x-trace-id", str(uuid.uuid4()))],
    ],
)
def test_a_bad_trace_id_is_replaced_and_said_why(metadata: list[tuple[str, str]]) -> None:
    made, problem = tracing.trace_id_from_metadata(metadata)
    assert tracing.valid_trace_id(made) and made != TRACE
    assert problem.startswith("malformed")


def test_without_a_trace_id_one_is_made_quietly() -> None:
    made, problem = tracing.trace_id_from_metadata([("user-agent", "grpc-python")])
    assert tracing.valid_trace_id(made) and problem == ""


def event(student_id: str = "stu-1") -> PredictionEvent:
    pid = str(uuid.uuid4())
    made = PredictionEvent(
        schema_version=envelope.SCHEMA_VERSION,
        event_id=pid,
        input=Student(profile=StudentProfile(student_id=student_id)),
        prediction=Prediction(prediction_id=pid, model_version="v1", pass_mark=50),
    )
    made.occurred_at.GetCurrentTime()
    return made


def test_the_trace_id_travels_in_the_headers() -> None:
    record = envelope.encode(event(), trace_id=TRACE)
    assert dict(record.headers)[envelope.TRACE_ID_HEADER] == TRACE.encode()
    assert envelope.trace_id(record.headers) == TRACE
    assert envelope.trace_id(envelope.encode(event()).headers) is None
    # A bad header loses the trace, not the event.
    assert envelope.trace_id([(envelope.TRACE_ID_HEADER, b"\xffnot-hex")]) is None


def test_each_record_carries_a_w3c_traceparent_of_the_trace() -> None:
    records = [
        envelope.encode(event("a"), trace_id=TRACE),
        envelope.encode(event("b"), trace_id=TRACE),
        envelope.encode_outcome(OutcomeEvent(outcome=Outcome(student_id="a")), trace_id=TRACE),
        envelope.encode_erasure(ErasureEvent(student_id="a"), trace_id=TRACE),
    ]
    parents = set()
    for record in records:
        header = dict(record.headers)[envelope.TRACEPARENT_HEADER].decode()
        version, trace, parent, flags = header.split("-")
        assert (version, trace, flags) == ("00", TRACE, "01")
        assert len(parent) == 16 and int(parent, 16) != 0 and parent == parent.lower()
        # What reads the caller's header reads ours: the same trace.
        assert tracing.trace_id_from_traceparent(header) == TRACE
        parents.add(parent)
    assert len(parents) == len(records)  # each record its own span
    untraced = envelope.encode(event())
    assert envelope.TRACEPARENT_HEADER not in dict(untraced.headers)


async def test_the_trace_id_survives_the_spool(tmp_path: Path) -> None:
    here = Destination(topic="t", bootstrap_servers="127.0.0.1:9092")
    spool = await Spool.open(tmp_path, max_bytes=1 << 20, destination=here)
    written = envelope.encode(event(), trace_id=TRACE)
    await spool.append([written])
    await spool.close()
    reopened = await Spool.open(tmp_path, max_bytes=1 << 20, destination=here)
    oldest = await reopened.oldest()
    assert oldest is not None
    [record] = oldest[2]
    assert envelope.trace_id(record.headers) == TRACE
    assert record.headers == written.headers  # traceparent too, byte for byte


class _Record:
    def __init__(self, headers: list[tuple[str, bytes]], value: bytes) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "t", 0, 0, 0
        self.key, self.value, self.headers = b"k", value, headers


def test_the_recorder_stages_the_trace_id_of_each_record() -> None:
    traced = envelope.encode(event("a"), trace_id=TRACE)
    untraced = envelope.encode(event("b"))
    found = triage(
        [_Record(traced.headers, traced.value), _Record(untraced.headers, untraced.value)]
    )
    column = STAGING_COLUMNS.index("trace_id")
    assert [row[column] for row in found.rows] == [TRACE, None]


def _formatted(formatter: logging.Formatter, *, exc: bool = False) -> str:
    logger = logging.getLogger("tests.tracing")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc:
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed for %s", "s1")
        else:
            logger.warning("answered %s", "s1")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


def test_json_lines_carry_the_call_ids_when_set() -> None:
    def in_a_call() -> str:
        tracing.request_id.set("r" * 32)
        tracing.trace_id.set(TRACE)
        return _formatted(JsonFormatter())

    inside = json.loads(contextvars.copy_context().run(in_a_call))
    assert inside["message"] == "answered s1" and inside["level"] == "WARNING"
    assert inside["logger"] == "tests.tracing" and inside["time"].endswith("+00:00")
    assert (inside["request_id"], inside["trace_id"]) == ("r" * 32, TRACE)
    outside = json.loads(_formatted(JsonFormatter()))
    assert "request_id" not in outside and "trace_id" not in outside


def test_json_lines_hold_the_traceback_in_one_line() -> None:
    text = _formatted(JsonFormatter(), exc=True)
    assert text.count("\n") == 1
    line = json.loads(text)
    assert line["message"] == "failed for s1" and "ValueError: boom" in line["exc_info"]


def test_text_lines_name_the_ids_too() -> None:
    def in_a_call() -> str:
        tracing.trace_id.set(TRACE)
        return _formatted(TextFormatter())

    text = contextvars.copy_context().run(in_a_call)
    assert "WARNING tests.tracing: answered s1" in text and f"trace_id={TRACE}" in text


def test_bad_log_format_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="STUDENTPERF_LOG_FORMAT='xml'"):
        configure_logging({"STUDENTPERF_LOG_FORMAT": "xml"})


class TracePublisher(RecordingPublisher):
    """Records what it publishes, and the trace id of the context it publishes in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_in: list[str | None] = []

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        self.seen_in.append(tracing.trace_id.get())
        await super().publish(records)


async def test_micro_batched_calls_keep_their_own_trace_ids() -> None:
    publisher = TracePublisher()
    core = PredictionCore(
        AgeModel(), publisher, max_batch_size=10, microbatch_wait_s=0.05, microbatch_max=64
    )
    traces = [tracing.new_id() for _ in range(5)]

    async def call(number: int) -> str:
        tracing.trace_id.set(traces[number])  # each task has a context of its own
        return (await core.predict(unit_student(f"s{number}", 20))).prediction_id

    ids = await asyncio.gather(*(asyncio.create_task(call(n)) for n in range(5)))
    assert publisher.seen_in == [None]  # one shared publish, in no call's context
    by_prediction = {
        envelope.decode(r.value).event_id: envelope.trace_id(r.headers) for r in publisher.records
    }
    assert [by_prediction[pid] for pid in ids] == traces


async def test_a_batch_has_one_trace_id_for_all_its_events() -> None:
    publisher = RecordingPublisher()
    core = PredictionCore(AgeModel(), publisher, max_batch_size=10)
    tracing.trace_id.set(TRACE)
    try:
        await core.predict_batch([unit_student(f"b{n}", 20) for n in range(3)])
    finally:
        tracing.trace_id.set(None)
    assert [envelope.trace_id(r.headers) for r in publisher.records] == [TRACE] * 3
