"""Ground truth into PostgreSQL over gRPC: RecordOutcomes, and predictions without a database."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc
import pytest

from inference_service.server import start_server
from inference_service.settings import Settings as InferenceSettings
from studentperf.config import SharedSettings
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests.integration.conftest import Stack
from tests.integration.helpers import count_rows, eventually

pytestmark = pytest.mark.usefixtures("recorder")


def outcome(student_id: str, term: str = "2026-spring", score: float | None = 70.0) -> api.Outcome:
    message = api.Outcome(student_id=student_id, term=term)
    if score is not None:
        message.final_score = score
    return message


async def record(
    stub: api_grpc.PredictionServiceStub, *outcomes: api.Outcome
) -> list[api.RecordOutcomeResult]:
    request = api.RecordOutcomesRequest(outcomes=list(outcomes))
    return list((await stub.RecordOutcomes(request, timeout=10)).results)


async def test_outcomes_are_stored_replaced_on_re_record_and_add_unknown_students(
    stub: api_grpc.PredictionServiceStub, db: asyncpg.Pool
) -> None:
    first = await record(stub, outcome("out-1", score=61.5), outcome("out-2", term="2025-fall"))
    assert [r.stored for r in first] == [
        api.OutcomeStored(replaced=False, student_added=True),
        api.OutcomeStored(replaced=False, student_added=True),
    ]
    again = await record(stub, outcome("out-1", score=64.0))
    assert again[0].stored == api.OutcomeStored(replaced=True, student_added=False)
    rows = await db.fetch(
        "SELECT student_id, term, final_score, source FROM outcomes"
        " WHERE student_id LIKE 'out-%' ORDER BY student_id"
    )
    assert [tuple(r) for r in rows] == [
        ("out-1", "2026-spring", 64.0, "rpc"),
        ("out-2", "2025-fall", 70.0, "rpc"),
    ]
    # The added student exists (the foreign key holds) but has no profile yet.
    added = await db.fetchrow(
        "SELECT age, gender, profile_as_of = '-infinity' AS placeholder FROM students"
        " WHERE student_id = 'out-2'"
    )
    assert tuple(added) == (None, None, True)


async def test_a_prediction_s_profile_replaces_the_placeholder(
    stub: api_grpc.PredictionServiceStub, db: asyncpg.Pool
) -> None:
    await record(stub, outcome("out-later"))
    student = pb.Student(profile=pb.StudentProfile(student_id="out-later", age=15))
    await stub.Predict(api.PredictRequest(student=student), timeout=10)
    probe = count_rows(db, "SELECT count(*) FROM students WHERE student_id='out-later' AND age=15")
    assert await eventually(probe, 1, timeout=15) == 1


async def test_bad_outcomes_are_refused_alone_naming_the_field(
    stub: api_grpc.PredictionServiceStub, db: asyncpg.Pool
) -> None:
    results = await record(
        stub,
        outcome("out-ok-3"),
        outcome("out-4", term="Spring 2026"),
        outcome("out-5", score=None),
        outcome("out-6", score=101),
    )
    assert [r.WhichOneof("result") for r in results] == ["stored", "error", "error", "error"]
    assert [r.error.bad_request.field_violations[0].field for r in results[1:]] == [
        "outcomes[1].term",
        "outcomes[2].final_score",
        "outcomes[3].final_score",
    ]
    assert all(r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in results[1:])
    stored = await db.fetchval("SELECT count(*) FROM outcomes WHERE student_id LIKE 'out-_'")
    assert stored == 2  # out-1 and out-2 from the first test; none of 4, 5, 6


async def test_predictions_do_not_need_the_database(stack: Stack, tmp_path: Path) -> None:
    nowhere = SharedSettings(
        kafka_bootstrap_servers=stack.shared.kafka_bootstrap_servers,
        kafka_topic=stack.topic,
        database_url="postgresql://postgres@127.0.0.1:1/none",
    )
    settings = InferenceSettings(
        shared=nowhere,
        listen_address="127.0.0.1:0",
        model_path=str(stack.model_path),
        spool_dir=str(tmp_path / "spool"),
    )
    running = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            student = pb.Student(profile=pb.StudentProfile(student_id="no-db-1"))
            answer = await stub.Predict(api.PredictRequest(student=student), timeout=10)
            assert answer.prediction.model_version
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await record(stub, outcome("no-db-1"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "Nothing was stored" in (caught.value.details() or "")
            # Still predicting after the database failure.
            await stub.Predict(api.PredictRequest(student=student), timeout=10)
    finally:
        await running.stop(grace_s=1)
