"""Predictions name their term, and the monitor pairs them with outcomes by student and term.

Through the real inference service (current term configured: 2026-spring), Kafka, the recorder
and PostgreSQL; the monitor reads with its own role and judges with its own functions. Before
terms, a prediction was paired with the student's first outcome recorded after it: outcomes
recorded first were never paired, and a later term's outcome was taken instead (issue 15).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from inference_service.spool import Spool
from studentperf.client import StudentInput
from studentperf.client import aio as aio_client
from studentperf.config import DatabaseRole
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack, inference_settings, serving
from tests.integration.helpers import count_rows, eventually, student, topic_size
from trainer.monitor.assess import Thresholds, assess_version
from trainer.monitor.data import read_recent

pytestmark = pytest.mark.usefixtures("recorder")

CURRENT_TERM = "2026-spring"
STUDENTS = 1_000


@pytest.fixture(scope="module")
async def inference(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    spool = tmp_path_factory.mktemp("spool")
    async for running in serving(inference_settings(stack, spool, current_term=CURRENT_TERM)):
        yield running


async def record(
    stub: api_grpc.PredictionServiceAsyncStub,
    ids: Sequence[str],
    term: str,
    scores: Sequence[float],
) -> None:
    outcomes = [
        api.Outcome(student_id=sid, term=term, final_score=score)
        for sid, score in zip(ids, scores, strict=True)
    ]
    answer = await stub.RecordOutcomes(api.RecordOutcomesRequest(outcomes=outcomes), timeout=30)
    assert all(r.HasField("stored") for r in answer.results)


def _spooled_count(spool: Spool) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return spool.records

    return probe


async def stored_terms(db: asyncpg.Pool, ids: Sequence[str]) -> dict[str, str | None]:
    rows = await db.fetch(
        "SELECT prediction_id::text, term FROM predictions WHERE prediction_id = ANY($1::uuid[])",
        list(ids),
    )
    return {r["prediction_id"]: r["term"] for r in rows}


async def test_outcomes_recorded_before_the_predictions_pair_with_them_by_term(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack, db: asyncpg.Pool
) -> None:
    """The issue's case: 1,000 outcomes for 2026-spring, then 1,000 predictions for the same
    students and term; then another term's outcomes, which the old rule would have taken."""
    ids = [f"spring-{i}" for i in range(STUDENTS)]
    spring = [float(40 + i % 50) for i in range(STUDENTS)]
    await record(stub, ids, CURRENT_TERM, spring)

    since = datetime.now(UTC)
    answer = await stub.BatchPredict(
        api.BatchPredictRequest(
            students=[student(sid, previous_gpa=3.0) for sid in ids], term=CURRENT_TERM
        ),
        timeout=60,
    )
    predictions = [r.prediction for r in answer.results]
    assert {p.term for p in predictions} == {CURRENT_TERM}
    await record(stub, ids, "2026-fall", [99.0] * STUDENTS)  # after the predictions

    stored = await eventually(
        count_rows(db, "SELECT count(*) FROM predictions WHERE term = $1", CURRENT_TERM), STUDENTS
    )
    assert stored == STUDENTS
    # Outcomes are written by the recorder (issue 15): the later term's must be there to tempt.
    fall = count_rows(db, "SELECT count(*) FROM outcomes WHERE term = '2026-fall'")
    assert await eventually(fall, STUDENTS) == STUDENTS

    recent = await read_recent(stack.database_url_as(DatabaseRole.TRAINER), since=since, last=None)
    assert len(recent) == STUDENTS
    ours = recent[recent["final_score"].notna()]
    paired = len(ours)
    later = int((ours["final_score"] == 99.0).sum())
    # Each prediction met its own student's spring score: as many as stored, none the fall's.
    by_score = sorted(ours["final_score"].tolist())
    print(
        f"outcomes {STUDENTS} for {CURRENT_TERM}, predictions {len(predictions)}, stored "
        f"{stored}, paired {paired}, paired with the later term {later}"
    )
    assert paired == STUDENTS
    assert by_score == sorted(spring)
    report = assess_version(
        predictions[0].model_version,
        recent,
        reference=None,
        held_out=None,
        thresholds=Thresholds(),
    )
    assert report.quality is not None and report.quality.rows == STUDENTS
    assert not any("no outcomes recorded" in note for note in report.notes)
    expected_rmse = float(
        np.sqrt(np.mean((np.array(spring) - [p.predicted_final_score for p in predictions]) ** 2))
    )
    assert report.quality.score_rmse == pytest.approx(expected_rmse)


async def test_a_request_without_a_term_gets_the_current_one_as_an_old_client_sends_it(
    inference: RunningServer, db: asyncpg.Pool
) -> None:
    """An old client's request is the student (field 1) alone on the wire: it knows no term."""
    old_student = student("old-client", previous_gpa=2.5).SerializeToString()
    assert len(old_student) < 128  # its length is one byte on the wire
    old_request = b"\x0a" + bytes([len(old_student)]) + old_student
    assert api.PredictRequest.FromString(old_request).term == ""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{inference.port}") as channel:
        predict: grpc.aio.UnaryUnaryMultiCallable[bytes, api.PredictResponse]
        predict = channel.unary_unary(
            "/studentperf.v1.PredictionService/Predict",
            request_serializer=None,
            response_deserializer=api.PredictResponse.FromString,
        )
        old = await predict(old_request, timeout=10)
        stub = api_grpc.PredictionServiceStub(channel)
        new = await stub.Predict(api.PredictRequest(student=student("new-client")), timeout=10)
    ids = [old.prediction.prediction_id, new.prediction.prediction_id]
    assert old.prediction.term == new.prediction.term == CURRENT_TERM
    assert (
        await eventually(
            count_rows(
                db, "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1::uuid[])", ids
            ),
            2,
        )
        == 2
    )
    assert await stored_terms(db, ids) == dict.fromkeys(ids, CURRENT_TERM)


@pytest.mark.parametrize("term", ["spring", "2026-Spring", "2026-" + "a" * 28])
async def test_a_bad_term_is_refused_naming_the_field_and_publishes_nothing(
    stub: api_grpc.PredictionServiceAsyncStub, stack: Stack, term: str
) -> None:
    before = await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic)
    calls: list[grpc.aio.UnaryUnaryCall[Any, Any]] = [
        stub.Predict(api.PredictRequest(student=student("x"), term=term), timeout=10),
        stub.BatchPredict(
            api.BatchPredictRequest(students=[student("x"), student("y")], term=term), timeout=10
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "term: 'YYYY-name' in lower-case letters and digits" in (
            caught.value.details() or ""
        )
        status = await rpc_status.aio.from_call(call)
        assert status is not None
        violations = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(violations)
        assert [v.field for v in violations.field_violations] == ["term"]
    assert await topic_size(stack.shared.kafka_bootstrap_servers, stack.topic) == before


async def test_without_a_current_term_a_prediction_names_none_and_pairs_by_time(
    stack: Stack, db: asyncpg.Pool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No term configured and none given: stored without one, paired as before terms were."""
    settings = InferenceSettings(
        shared=stack.shared_as(DatabaseRole.INFERENCE),
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(tmp_path_factory.mktemp("spool-no-term")),
    )
    running = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            await record(stub, ["untermed"], "2025-fall", [30.0])  # before: already known
            since = datetime.now(UTC)
            answer = await stub.Predict(api.PredictRequest(student=student("untermed")), timeout=10)
            await record(stub, ["untermed"], "2026-fall", [80.0])  # after: the one forecast
        # Calls before the service reached Kafka were spooled: outcomes too since issue 15.
        spooled = running.publisher.spool
        assert await eventually(_spooled_count(spooled), 0, timeout=30) == 0
    finally:
        await running.stop(grace_s=5)
    pid = answer.prediction.prediction_id
    assert answer.prediction.term == ""
    assert (
        await eventually(
            count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = $1", pid), 1
        )
        == 1
    )
    assert await stored_terms(db, [pid]) == {pid: None}
    recent = await read_recent(stack.database_url_as(DatabaseRole.TRAINER), since=since, last=None)
    assert recent["final_score"].tolist() == [80.0]


async def test_the_client_passes_a_term_for_one_student_and_for_many(
    inference: RunningServer,
) -> None:
    async with aio_client.connect(f"127.0.0.1:{inference.port}") as client:
        one = await client.predict(StudentInput("client-1"), term="2025-term-2")
        many = await client.predict_many(
            [StudentInput(f"client-{i}") for i in range(5)], term="2026-fall", batch_size=2
        )
        default = await client.predict(StudentInput("client-2"))
    assert one.prediction.term == "2025-term-2"
    assert [r.prediction.term for r in many] == ["2026-fall"] * 5
    assert default.prediction.term == CURRENT_TERM
