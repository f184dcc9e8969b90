"""Hostile input through a real channel: refused cleanly, nothing published, still serving."""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from studentperf.config import DatabaseRole
from studentperf.features import FEATURE_COLUMNS, SCORE_RANGE
from studentperf.largest_items import largest_student
from studentperf.limits import DEFAULT_MAX_BATCH_SIZE, MAX_EXPLAINED_BATCH
from studentperf.outcomes import TERM_MAX_LENGTH
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack, inference_settings
from tests.integration.helpers import eventually, student, topic_size
from tests.unit.test_encoding_properties import (
    ID_CHARACTERS,
    Case,
    bad_ids,
    cases,
    imputed_fields,
    invalid_students,
    outside_range,
    valid_ids,
    valid_students,
)

# The inputs an explanation can list: every feature.
FEATURES = len(FEATURE_COLUMNS)
TERM_NAME_CHARACTERS = string.ascii_lowercase + string.digits
SMALL_BATCHES = st.integers(0, 12)
any_top_factors = st.one_of(st.just(0), st.integers(1, 12), st.integers(0, 2**32 - 1))


@st.composite
def valid_terms(draw: st.DrawFn) -> str:
    """'YYYY-name' (name: one or more dash-joined parts), at most 32 characters."""
    year = draw(st.text("0123456789", min_size=4, max_size=4))
    parts = draw(st.lists(st.text(TERM_NAME_CHARACTERS, min_size=1, max_size=8), min_size=1))
    return f"{year}-{'-'.join(parts)}"[:TERM_MAX_LENGTH].rstrip("-")


@st.composite
def bad_terms(draw: st.DrawFn) -> str:
    """A term breaking one part of its rule (an empty one is valid: the current term)."""
    term = draw(valid_terms())
    kind = draw(st.sampled_from(["too long", "no year", "year only", "foreign", "dash last"]))
    if kind == "too long":
        return term + "-" + "a" * max(1, TERM_MAX_LENGTH - len(term))
    if kind == "no year":
        return draw(st.text(string.ascii_lowercase + "-", min_size=1, max_size=12))
    if kind == "year only":
        return term[:4]
    if kind == "dash last":
        return term[: TERM_MAX_LENGTH - 1] + "-"
    term = term[: TERM_MAX_LENGTH - 1]
    at = draw(st.integers(5, len(term)))
    foreign = st.characters(
        blacklist_characters=TERM_NAME_CHARACTERS + "-", blacklist_categories=["Cs"]
    )
    return term[:at] + draw(foreign) + term[at:]


def terms() -> st.SearchStrategy[str]:
    """Valid terms: empty (the server's current term) or named."""
    return st.one_of(st.just(""), valid_terms())


@dataclass(frozen=True)
class Call:
    """A request and its verdict: `refused` names the one field the call is refused for (None:
    answered), and `cases` says which students of an answered call are valid."""

    request: api.PredictRequest | api.BatchPredictRequest
    cases: list[Case]
    refused: str | None = None


@st.composite
def predict_calls(draw: st.DrawFn) -> Call:
    """A Predict valid in every field, or broken in exactly one: a student's field, the
    student left out, or the term."""
    broken = draw(st.sampled_from(["nothing", "student", "no student", "term"]))
    top_factors = draw(any_top_factors)
    term = draw(bad_terms() if broken == "term" else terms())
    if broken == "no student":
        return Call(api.PredictRequest(top_factors=top_factors, term=term), [], "student")
    case = draw(invalid_students()) if broken == "student" else Case(draw(valid_students()), None)
    request = api.PredictRequest(student=case.student, top_factors=top_factors, term=term)
    refused = "term" if broken == "term" else case.broken and f"student.{case.broken}"
    return Call(request, [case], refused)


@st.composite
def batch_calls(draw: st.DrawFn, sizes: st.SearchStrategy[int] = SMALL_BATCHES) -> Call:
    """A BatchPredict of valid and invalid students, each invalid in one field; or of valid
    ones only, with a bad term."""
    bad_term = draw(st.integers(0, 9)) == 0
    size = draw(sizes)
    students = valid_students().map(lambda s: Case(s, None)) if bad_term else cases()
    batch = draw(st.lists(students, min_size=size, max_size=size))
    request = api.BatchPredictRequest(
        students=[case.student for case in batch],
        top_factors=draw(any_top_factors),
        term=draw(bad_terms() if bad_term else terms()),
    )
    return Call(request, batch, "term" if bad_term else None)


def padded_batch(size: int, among: list[tuple[int, Case]], top_factors: int) -> Call:
    """`size` valid students, with the generated `among` cases at their positions."""
    batch = [Case(student(f"pad-{i}"), None) for i in range(size)]
    for at, case in among:
        batch[at % size] = case
    request = api.BatchPredictRequest(students=[c.student for c in batch], top_factors=top_factors)
    return Call(request, batch)


@dataclass
class Tally:
    """What a run sent, and what came back, counted against each call's known verdict."""

    calls: int = 0
    refused_calls: int = 0
    valid_students: int = 0  # sent in a call that was not refused: each must be predicted
    invalid_students: int = 0  # each must be refused on its own, naming its broken field

    def __str__(self) -> str:
        return (
            f"{self.calls} calls ({self.refused_calls} refused as a whole), "
            f"{self.valid_students} valid students predicted, "
            f"{self.invalid_students} invalid students refused by field"
        )


def violated_fields(error: grpc.RpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest detail of a refused call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no status details: {error}"
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [violation.field for violation in bad.field_violations]
    return found


def check_prediction(prediction: api.Prediction, case: Case, request: Call) -> None:
    """A valid student's answer: the imputed fields its request left out, the term it asked
    for (the module's server has no current term) and the explanation it asked for."""
    assert case.broken is None
    assert prediction.prediction_id and prediction.model_version
    assert list(prediction.imputed_fields) == imputed_fields(case.student)
    assert 0 <= prediction.predicted_final_score <= 100
    assert 0 <= prediction.pass_probability <= 1
    assert prediction.term == request.request.term
    top_factors = request.request.top_factors
    assert prediction.HasField("explanation") == (top_factors > 0)
    assert len(prediction.explanation.top_factors) == min(top_factors, FEATURES)


def make_call(stub: api_grpc.PredictionServiceStub, call: Call, tally: Tally) -> None:
    """Sends `call` and checks its answer against its verdict."""
    tally.calls += 1
    request = call.request
    try:
        if isinstance(request, api.PredictRequest):
            answer = stub.Predict(request, timeout=60)
            results = [api.BatchPredictResult(prediction=answer.prediction)]
        else:
            results = list(stub.BatchPredict(request, timeout=60).results)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert violated_fields(error) == [call.refused], (error.details(), call.refused)
        tally.refused_calls += 1
        return
    assert call.refused is None, f"answered a call whose {call.refused} breaks its rule"
    assert len(results) == len(call.cases)
    for index, (result, case) in enumerate(zip(results, call.cases, strict=True)):
        if case.broken is None:
            assert result.WhichOneof("result") == "prediction", result.error.message
            check_prediction(result.prediction, case, call)
            tally.valid_students += 1
        else:
            assert result.WhichOneof("result") == "error", f"answered a bad {case.broken}"
            assert result.error.code == code_pb2.INVALID_ARGUMENT
            fields = [v.field for v in result.error.bad_request.field_violations]
            assert fields == [f"students[{index}].{case.broken}"]
            tally.invalid_students += 1


def run_calls(
    address: str, calls: st.SearchStrategy[Call], examples: int, first: Sequence[Call] = ()
) -> Tally:
    """Makes the `first` calls, then runs the property, on a plain (blocking) channel; returns
    what it sent."""
    tally = Tally()
    with grpc.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        for known in first:
            make_call(stub, known, tally)

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(calls)
        def call(call: Call) -> None:
            make_call(stub, call, tally)

        call()
    return tally


async def published(stack: Stack) -> int:
    return await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)


@pytest.mark.usefixtures("recorder")
# The server in this process draws from `random` (aiokafka picks brokers) while Hypothesis
# generates in the client's thread; the generated data does not depend on it.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_each_request_gets_the_verdict_its_fields_call_for_and_only_answers_publish(
    inference: RunningServer, stack: Stack
) -> None:
    before = await published(stack)
    calls = st.one_of(predict_calls(), batch_calls())
    # The blocking client runs in a thread so this loop goes on serving it.
    tally = await asyncio.to_thread(run_calls, f"127.0.0.1:{inference.port}", calls, 200)
    print(tally)
    assert tally.valid_students > 0 and tally.invalid_students > 0 and tally.refused_calls > 0
    after = lambda: published(stack)  # noqa: E731
    expected = before + tally.valid_students
    assert await eventually(after, expected, timeout=10) == expected


@dataclass(frozen=True)
class OutcomeCase:
    """An outcome and its verdict: None when valid, else the one field that breaks its rule."""

    outcome: api.Outcome
    broken: str | None


@st.composite
def outcome_cases(draw: st.DrawFn) -> OutcomeCase:
    """An outcome valid in every field, or with exactly one field breaking its rule."""
    outcome = api.Outcome(
        student_id=draw(valid_ids()), term=draw(valid_terms()), final_score=draw(st.floats(0, 100))
    )
    broken = draw(st.sampled_from([None, "student_id", "term", "final_score"]))
    if broken == "student_id":
        outcome.student_id = draw(bad_ids())
    elif broken == "term":
        outcome.term = draw(st.one_of(st.just(""), bad_terms()))  # required here
    elif broken == "final_score":
        if draw(st.booleans()):
            outcome.ClearField("final_score")
        else:
            outcome.final_score = draw(outside_range(*SCORE_RANGE))
    return OutcomeCase(outcome, broken)


@st.composite
def outcome_calls(draw: st.DrawFn) -> list[OutcomeCase]:
    """A RecordOutcomes batch; sometimes one valid outcome is sent twice (another score)."""
    batch = draw(st.lists(outcome_cases(), max_size=12))
    valid = [case.outcome for case in batch if case.broken is None]
    if draw(st.booleans()) and valid:
        again = api.Outcome()
        again.CopyFrom(draw(st.sampled_from(valid)))
        again.final_score = draw(st.floats(0, 100))
        batch.insert(draw(st.integers(0, len(batch))), OutcomeCase(again, None))
    return batch


def expected_outcome_fields(batch: list[OutcomeCase]) -> list[str | None]:
    """Per outcome, the field its refusal names (None: stored). A student and term sent more
    than once is refused every time, named by the outcome itself."""
    keys = [(c.outcome.student_id, c.outcome.term) for c in batch if c.broken is None]
    return [
        f"outcomes[{index}].{case.broken}"
        if case.broken is not None
        else f"outcomes[{index}]"
        if keys.count((case.outcome.student_id, case.outcome.term)) > 1
        else None
        for index, case in enumerate(batch)
    ]


def record_outcomes(address: str, examples: int) -> tuple[int, int, int]:
    """Runs the property on a plain (blocking) channel; returns (stored, refused by field,
    refused as the same student and term)."""
    stored = refused = repeated = 0
    with grpc.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)

        @settings(max_examples=examples, deadline=None)
        @given(outcome_calls())
        def call(batch: list[OutcomeCase]) -> None:
            nonlocal stored, refused, repeated
            request = api.RecordOutcomesRequest(outcomes=[case.outcome for case in batch])
            reply = stub.RecordOutcomes(request, timeout=60)
            assert len(reply.results) == len(batch)
            for result, field in zip(reply.results, expected_outcome_fields(batch), strict=True):
                if field is None:
                    assert result.WhichOneof("result") == "stored", result.error.message
                    stored += 1
                    continue
                assert result.WhichOneof("result") == "error", f"stored a bad {field}"
                assert [v.field for v in result.error.bad_request.field_violations] == [field]
                if field.endswith("]"):
                    repeated += 1
                else:
                    refused += 1

        call()
    return stored, refused, repeated


@pytest.mark.usefixtures("recorder")
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_each_outcome_gets_the_verdict_its_fields_call_for_and_only_stored_ones_publish(
    inference: RunningServer, stack: Stack
) -> None:
    before = await published(stack)
    address = f"127.0.0.1:{inference.port}"
    stored, refused, repeated = await asyncio.to_thread(record_outcomes, address, 100)
    print(
        f"outcomes: {stored} valid stored, {refused} invalid refused by field, "
        f"{repeated} refused as the same student and term"
    )
    assert stored > 0 and refused > 0 and repeated > 0
    expected = before + stored
    assert await eventually(lambda: published(stack), expected, timeout=10) == expected


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


SMALL_BATCH = 50


@pytest.fixture(scope="module")
async def small_running(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    settings = InferenceSettings(
        shared=stack.shared,
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(tmp_path_factory.mktemp("spool")),
        max_batch_size=SMALL_BATCH,
        max_request_bytes=64 * 1024,
    )
    running = await start_server(settings)
    # Until Kafka answers, events are spooled and reach the topic later: the tests count the
    # topic, so they start once the events go straight there.
    connected = lambda: _value(int(running.publisher.kafka_connected))  # noqa: E731
    assert await eventually(connected, 1, timeout=60) == 1
    yield running
    await running.stop(grace_s=1)


@pytest.fixture(scope="module")
def small_server_address(small_running: RunningServer) -> str:
    return f"127.0.0.1:{small_running.port}"


@pytest.fixture(scope="module")
async def small_server(
    small_server_address: str,
) -> AsyncIterator[api_grpc.PredictionServiceAsyncStub]:
    async with grpc.aio.insecure_channel(
        small_server_address, options=[("grpc.max_send_message_length", 8 << 20)]
    ) as channel:
        yield api_grpc.PredictionServiceStub(channel)


async def test_batches_at_the_limit_pass_and_over_it_are_refused(
    small_server: api_grpc.PredictionServiceAsyncStub,
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


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_batches_around_the_configured_limit_get_their_verdicts(
    small_running: RunningServer, small_server_address: str, stack: Stack
) -> None:
    assert await eventually(lambda: _value(small_running.publisher.spool.records), 0) == 0
    before = await published(stack)
    around = batch_calls(sizes=st.sampled_from([0, 1, 49, 50, 51, 52]))
    # The term is checked first, then the size: over the limit, a call with a valid term is
    # refused naming "students", whatever its students.
    calls = around.map(
        lambda c: (
            Call(c.request, c.cases, "students")
            if len(c.cases) > SMALL_BATCH and c.refused is None
            else c
        )
    )
    edges = [
        padded_batch(SMALL_BATCH, [], top_factors=0),
        Call(padded_batch(SMALL_BATCH + 1, [], 0).request, [], "students"),
    ]
    tally = await asyncio.to_thread(run_calls, small_server_address, calls, 40, edges)
    print(f"batches around {SMALL_BATCH}: {tally}")
    assert tally.refused_calls > 0 and tally.valid_students > 0
    expected = before + tally.valid_students
    assert await eventually(lambda: published(stack), expected, timeout=10) == expected


@st.composite
def explained_limit_calls(draw: st.DrawFn) -> Call:
    """Batches just under, at and over the explained limit (1,000) and over the batch limit
    (10,000), explained or not; a few generated students among copies of a valid one."""
    size = draw(
        st.sampled_from([MAX_EXPLAINED_BATCH - 1, MAX_EXPLAINED_BATCH, MAX_EXPLAINED_BATCH + 1])
    )
    over_all = draw(st.integers(0, 4)) == 0
    top_factors = 0 if over_all else draw(any_top_factors)
    if over_all:
        size = DEFAULT_MAX_BATCH_SIZE + 1
    among = draw(st.lists(st.tuples(st.integers(0, size - 1), cases()), max_size=4))
    call = padded_batch(size, among, top_factors)
    if over_all:
        return Call(call.request, call.cases, "students")
    if top_factors and size > MAX_EXPLAINED_BATCH:
        return Call(call.request, call.cases, "top_factors")
    return call


@pytest.mark.usefixtures("recorder")
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_batches_around_the_default_limits_get_their_verdicts(
    inference: RunningServer, stack: Stack
) -> None:
    before = await published(stack)
    address = f"127.0.0.1:{inference.port}"
    # Each limit's edges once for certain; then generated ones.
    edges = [
        padded_batch(MAX_EXPLAINED_BATCH, [], top_factors=3),
        Call(padded_batch(MAX_EXPLAINED_BATCH + 1, [], 1).request, [], "top_factors"),
        padded_batch(MAX_EXPLAINED_BATCH + 1, [], top_factors=0),
        Call(padded_batch(DEFAULT_MAX_BATCH_SIZE + 1, [], 0).request, [], "students"),
    ]
    tally = await asyncio.to_thread(run_calls, address, explained_limit_calls(), 12, edges)
    print(f"batches around {MAX_EXPLAINED_BATCH} and {DEFAULT_MAX_BATCH_SIZE}: {tally}")
    assert tally.refused_calls > 0 and tally.valid_students > 0
    expected = before + tally.valid_students
    assert await eventually(lambda: published(stack), expected, timeout=30) == expected


async def test_messages_over_the_size_limit_are_resource_exhausted(
    small_server: api_grpc.PredictionServiceAsyncStub,
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
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(SERVICE + method)
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


async def refusals_counted(
    running: RunningServer, before: dict[tuple[str, str], float], method: str, expected: int
) -> int:
    """The INVALID_ARGUMENT answers of `method` counted since `before`, once they reach
    `expected` (or time is up): a call's duration is observed as its handler ends, which may be
    just after its client has the answer."""
    key = (method, "INVALID_ARGUMENT")

    async def counted() -> int:
        return int(rpc_counts(running).get(key, 0) - before.get(key, 0))

    return await eventually(counted, expected, timeout=10)


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
    for method in UNDECODABLE_METHODS:
        assert await refusals_counted(inference, before, method, 3) == 3


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


ANY_FIELD = st.integers(1, 2**29 - 1)
# Bytes that begin no valid UTF-8 sequence: continuation bytes, and leads never used.
NEVER_UTF8 = [*range(0x80, 0xC2), *range(0xF5, 0x100)]


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[str, bytes]:
    """Bytes that break the wire format wherever a field may begin, by construction."""
    kind = draw(
        st.sampled_from(
            ["wire type 6/7", "field 0", "varint of 11 bytes", "group not closed", "group end"]
        )
    )
    field = draw(ANY_FIELD)
    if kind == "wire type 6/7":
        return kind, _tag(field, draw(st.sampled_from([6, 7]))) + draw(st.binary(max_size=8))
    if kind == "field 0":
        return kind, _tag(0, 0) + b"\x01"
    if kind == "varint of 11 bytes":
        return kind, _tag(field, 0) + b"\x80" * 10 + b"\x01"
    if kind == "group not closed":
        return kind, _tag(field, 3)
    return kind, _tag(field, 4)


@st.composite
def truncations(draw: st.DrawFn) -> tuple[str, bytes]:
    """A length-delimited field claiming more bytes than follow: only at the end."""
    tail = draw(st.binary(max_size=16))
    short = draw(st.integers(1, 2**20))
    return "truncated", _tag(draw(ANY_FIELD), 2) + _varint(len(tail) + short) + tail


@st.composite
def not_utf8(draw: st.DrawFn) -> bytes:
    text = draw(st.text(ID_CHARACTERS, max_size=20)).encode()
    at = draw(st.integers(0, len(text)))
    return text[:at] + bytes([draw(st.sampled_from(NEVER_UTF8))]) + text[at:]


def valid_items(method: str) -> st.SearchStrategy[bytes]:
    """One valid student (Predict, BatchPredict) or outcome (RecordOutcomes), serialized."""
    if method == "RecordOutcomes":
        outcome = st.builds(
            api.Outcome,
            student_id=valid_ids(),
            term=valid_terms(),
            final_score=st.floats(0, 100),
        )
        return outcome.map(lambda o: o.SerializeToString())
    return valid_students().map(lambda s: s.SerializeToString())


@st.composite
def malformed_requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(method, how it is broken, bytes): a valid request with one flaw, at the top level or
    inside an item, that makes it no message of its type."""
    method = draw(st.sampled_from(UNDECODABLE_METHODS))
    items = [draw(valid_items(method)) for _ in range(draw(st.integers(0, 3)))]
    where = draw(st.sampled_from(["request", "item", "string"]))
    if where == "string":
        # A string field with bytes that are not UTF-8: the term of a prediction request,
        # the student_id of a student (inside its profile) or of an outcome.
        bad = draw(not_utf8())
        if method == "RecordOutcomes":
            items.append(_length_delimited(1, bad))
        elif draw(st.booleans()):
            items.append(_length_delimited(1, _length_delimited(1, bad)))
        else:
            return (
                method,
                "term not UTF-8",
                b"".join(_length_delimited(1, item) for item in items) + _length_delimited(3, bad),
            )
        return method, "string not UTF-8", b"".join(_length_delimited(1, i) for i in items)
    at_end = draw(st.booleans())
    how, flaw = draw(st.one_of(truncations(), corruptions()) if at_end else corruptions())
    if where == "item":
        item = draw(valid_items(method))
        items.append(item + flaw if at_end else flaw + item)
        return method, f"{how} in an item", b"".join(_length_delimited(1, i) for i in items)
    request = b"".join(_length_delimited(1, item) for item in items)
    return method, how, request + flaw if at_end else flaw + request


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_malformed_wire_bytes_are_invalid_argument_and_publish_nothing(
    inference: RunningServer, stack: Stack
) -> None:
    before, counts_before = await published(stack), rpc_counts(inference)
    sent: dict[str, int] = {}

    def run(address: str) -> None:
        with grpc.insecure_channel(address) as channel:

            @settings(max_examples=150, deadline=None)
            @given(malformed_requests())
            def call(malformed: tuple[str, str, bytes]) -> None:
                method, how, payload = malformed
                with pytest.raises(grpc.RpcError) as caught:
                    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes]
                    raw = channel.unary_unary(SERVICE + method)
                    raw(payload, timeout=60)
                error = caught.value
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (how, error)
                name = MESSAGES[method].DESCRIPTOR.full_name
                assert error.details() == f"the request is not a valid {name}: {UNDECODABLE}"
                sent[method] = sent.get(method, 0) + 1

            call()

    await asyncio.to_thread(run, f"127.0.0.1:{inference.port}")
    print(f"malformed requests refused: {sent}")
    for method in UNDECODABLE_METHODS:
        expected = sent.get(method, 0)
        assert await refusals_counted(inference, counts_before, method, expected) == expected
    assert await published(stack) == before


async def test_with_tokens_on_undecodable_requests_are_refused_before_any_parsing(
    stack: Stack, tmp_path: Path
) -> None:
    running = await start_server(
        InferenceSettings(
            shared=stack.shared,
            listen_address="127.0.0.1:0",
            models_dir=str(stack.model_path),
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
        answered = 4 * len(UNDECODABLE_METHODS)  # each observed as its handler ends
        total = lambda: _value(int(sum(rpc_counts(running).values())))  # noqa: E731
        assert await eventually(total, answered, timeout=10) == answered
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
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, api.BatchPredictResponse] = (
            channel.unary_unary(
                SERVICE + "BatchPredict", response_deserializer=api.BatchPredictResponse.FromString
            )
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
