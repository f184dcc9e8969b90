"""ListStudentPredictions through the real inference service, Kafka, recorder and PostgreSQL.

Predictions made over gRPC are recorded by the recorder and read back as the history: newest
first, page by page, each as it was answered, with its inputs and its term's outcome. The
history is read as the read-only analyst role (Settings.history_database_url).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inference_service.history import DEFAULT_PAGE_SIZE
from inference_service.server import start_server
from inference_service.settings import Settings as InferenceSettings
from studentperf.config import DatabaseRole
from studentperf.migrate import apply_migrations
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests.integration.conftest import Stack, running_postgres
from tests.integration.helpers import count_rows, eventually

pytestmark = pytest.mark.usefixtures("recorder")

TERM = "2026-spring"
OTHER_TERM = "2025-fall"
PREDICTIONS = 30


def student_input(student_id: str, index: int) -> pb.Student:
    """Inputs that differ per prediction, some fields left out (so some are imputed)."""
    record = pb.AcademicRecord(attendance_percentage=50.0 + index)
    if index % 2:
        record.previous_gpa = 2.0 + index / 100
    profile = pb.StudentProfile(student_id=student_id, age=15 + index % 3)
    if index % 4 == 0:
        profile.gender = pb.GENDER_FEMALE
    return pb.Student(profile=profile, academic_record=record)


async def list_all(
    stub: api_grpc.PredictionServiceAsyncStub, request: api.ListStudentPredictionsRequest
) -> tuple[list[api.StudentPrediction], int]:
    """Every page in turn; the entries and how many pages there were."""
    entries: list[api.StudentPrediction] = []
    pages = 0
    while True:
        page = await stub.ListStudentPredictions(request, timeout=10)
        pages += 1
        entries.extend(page.predictions)
        if not page.next_page_token:
            return entries, pages
        following = api.ListStudentPredictionsRequest()
        following.CopyFrom(request)  # the same request, for the next page
        following.page_token = page.next_page_token
        request = following


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    return [v.field for v in detail.field_violations]


@pytest.fixture(scope="module")
async def history(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> tuple[list[pb.Student], list[api.Prediction]]:
    """PREDICTIONS predictions of one student, in the order made; every third explained, every
    fifth for OTHER_TERM; an outcome recorded for TERM only."""
    sent: list[pb.Student] = []
    answered: list[api.Prediction] = []
    for index in range(PREDICTIONS):
        student = student_input("hist-1", index)
        request = api.PredictRequest(
            student=student,
            top_factors=2 if index % 3 == 0 else 0,
            term=OTHER_TERM if index % 5 == 0 else TERM,
        )
        sent.append(student)
        answered.append((await stub.Predict(request, timeout=10)).prediction)
    outcome = api.Outcome(student_id="hist-1", term=TERM, final_score=71.5)
    await stub.RecordOutcomes(api.RecordOutcomesRequest(outcomes=[outcome]), timeout=10)
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE student_id = 'hist-1'")
    assert await eventually(probe, PREDICTIONS, timeout=30) == PREDICTIONS
    # The outcome is its own event, stored after the predictions only by chance of the batches.
    stored = count_rows(db, "SELECT count(*) FROM outcomes WHERE student_id = 'hist-1'")
    assert await eventually(stored, 1, timeout=30) == 1
    return sent, answered


async def test_pages_give_every_prediction_newest_first_as_answered(
    stub: api_grpc.PredictionServiceAsyncStub,
    history: tuple[list[pb.Student], list[api.Prediction]],
) -> None:
    sent, answered = history
    request = api.ListStudentPredictionsRequest(student_id="hist-1", page_size=7)
    entries, pages = await list_all(stub, request)
    ids = [e.prediction.prediction_id for e in entries]
    print(f"listed {len(entries)} of {PREDICTIONS} in {pages} pages, {len(set(ids))} distinct")
    assert pages == 5  # 7 + 7 + 7 + 7 + 2: the last page says there is no next one
    assert ids == [p.prediction_id for p in reversed(answered)]
    times = [e.predicted_at.ToDatetime() for e in entries]
    assert times == sorted(times, reverse=True)
    for entry, prediction, student in zip(entries, reversed(answered), reversed(sent), strict=True):
        # Explanation and term included, exactly as answered; inputs exactly as sent.
        assert entry.prediction == prediction
        assert entry.student == student
        if prediction.term == TERM:
            assert entry.HasField("outcome_final_score")
            assert entry.outcome_final_score == 71.5
        else:
            assert not entry.HasField("outcome_final_score")
    explained = sum(e.prediction.HasField("explanation") for e in entries)
    asked = sum(p.HasField("explanation") for p in answered)
    print(f"explanations: {explained} listed, {asked} asked for")
    assert explained == asked == len(range(0, PREDICTIONS, 3))
    default_page = await stub.ListStudentPredictions(
        api.ListStudentPredictionsRequest(student_id="hist-1"), timeout=10
    )
    assert len(default_page.predictions) == min(PREDICTIONS, DEFAULT_PAGE_SIZE)


async def test_a_time_range_lists_only_what_falls_in_it(
    stub: api_grpc.PredictionServiceAsyncStub,
    history: tuple[list[pb.Student], list[api.Prediction]],
) -> None:
    everything, _ = await list_all(
        stub, api.ListStudentPredictionsRequest(student_id="hist-1", page_size=1000)
    )
    times = [e.predicted_at.ToDatetime() for e in everything]
    start, end = times[20], times[5]  # newest first: start is the older
    expected = [
        e.prediction.prediction_id
        for e, t in zip(everything, times, strict=True)
        if start <= t < end
    ]
    request = api.ListStudentPredictionsRequest(
        student_id="hist-1", page_size=4, start_time=stamp(start), end_time=stamp(end)
    )
    entries, pages = await list_all(stub, request)
    print(f"range: {len(entries)} listed in {pages} pages, {len(expected)} expected")
    assert [e.prediction.prediction_id for e in entries] == expected
    assert len(expected) == 15  # times[6] .. times[20], end exclusive, start inclusive


def stamp(moment: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(moment)
    return message


async def test_unknown_students_are_not_found_and_known_ones_without_predictions_empty(
    stub: api_grpc.PredictionServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListStudentPredictions(
            api.ListStudentPredictionsRequest(student_id="hist-nobody"), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "hist-nobody" in (caught.value.details() or "")
    outcome = api.Outcome(student_id="hist-quiet", term=TERM, final_score=50.0)
    await stub.RecordOutcomes(api.RecordOutcomesRequest(outcomes=[outcome]), timeout=10)
    # The outcome reaches the database through Kafka and the recorder: known once it is there.
    async with asyncio.timeout(60):
        while True:
            try:
                page = await stub.ListStudentPredictions(
                    api.ListStudentPredictionsRequest(student_id="hist-quiet"), timeout=10
                )
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND, error
                await asyncio.sleep(0.2)
    assert list(page.predictions) == [] and page.next_page_token == ""


async def test_bad_requests_are_refused_naming_the_field(
    stub: api_grpc.PredictionServiceAsyncStub,
    history: tuple[list[pb.Student], list[api.Prediction]],
) -> None:
    first = await stub.ListStudentPredictions(
        api.ListStudentPredictionsRequest(student_id="hist-1", page_size=2), timeout=10
    )
    token = first.next_page_token
    assert token
    cases = {
        "forged": (
            api.ListStudentPredictionsRequest(student_id="hist-1", page_token="bm9wZQ=="),
            ["page_token"],
        ),
        "not base64": (
            api.ListStudentPredictionsRequest(student_id="hist-1", page_token="%%%"),
            ["page_token"],
        ),
        "another student": (
            api.ListStudentPredictionsRequest(student_id="hist-quiet", page_token=token),
            ["page_token"],
        ),
        "another range": (
            api.ListStudentPredictionsRequest(
                student_id="hist-1", page_token=token, start_time=Timestamp(seconds=1)
            ),
            ["page_token"],
        ),
        "negative size": (
            api.ListStudentPredictionsRequest(student_id="hist-1", page_size=-1),
            ["page_size"],
        ),
        "empty range": (
            api.ListStudentPredictionsRequest(
                student_id="hist-1",
                start_time=Timestamp(seconds=10),
                end_time=Timestamp(seconds=10),
            ),
            ["end_time"],
        ),
        "bad id": (api.ListStudentPredictionsRequest(student_id="no spaces"), ["student_id"]),
    }
    for name, (request, fields) in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListStudentPredictions(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert bad_fields(caught.value) == fields, name
    # The genuine token still works.
    second = await stub.ListStudentPredictions(
        api.ListStudentPredictionsRequest(student_id="hist-1", page_size=2, page_token=token),
        timeout=10,
    )
    assert len(second.predictions) == 2
    assert not {p.prediction.prediction_id for p in second.predictions} & {
        p.prediction.prediction_id for p in first.predictions
    }


async def test_the_history_is_unavailable_while_its_database_is_away(
    stack: Stack, tmp_path: Path
) -> None:
    """A PostgreSQL of this test's own, stopped and started again under the running service."""
    async for own in running_postgres(tmp_path / "pg"):
        await own.ensure_database("history")
        conn = await asyncpg.connect(own.dsn("history"))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        settings = InferenceSettings(
            shared=stack.shared_as(DatabaseRole.INFERENCE),
            listen_address="127.0.0.1:0",
            models_dir=str(stack.model_path),
            spool_dir=str(tmp_path / "spool"),
            history_database_url=own.dsn("history").replace(
                f"//{DatabaseRole.OWNER}@", f"//{DatabaseRole.ANALYST}@", 1
            ),
        )
        running = await start_server(settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = api_grpc.PredictionServiceStub(channel)
                request = api.ListStudentPredictionsRequest(student_id="hist-away")
                codes = [await _code(stub, request)]
                own.stop()
                codes.append(await _code(stub, request))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ListStudentPredictions(request, timeout=30)
                print(f"history while the database is away: {caught.value.details()}")
                assert "not reachable" in (caught.value.details() or "")
                student = pb.Student(profile=pb.StudentProfile(student_id="hist-away"))
                await stub.Predict(api.PredictRequest(student=student), timeout=10)
                own.start()
                await own.wait_ready(60)
                codes.append(await _code(stub, request))
                print(f"codes: up, away, back: {[c.name for c in codes]}")
                assert codes == [
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.NOT_FOUND,
                ]
        finally:
            await running.stop(grace_s=1)


async def _code(
    stub: api_grpc.PredictionServiceAsyncStub, request: api.ListStudentPredictionsRequest
) -> grpc.StatusCode:
    try:
        await stub.ListStudentPredictions(request, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_tokens_grant_the_history_like_any_other_method(
    stack: Stack,
    tmp_path: Path,
    history: tuple[list[pb.Student], list[api.Prediction]],
) -> None:
    reader, predictor = "history-token-0123456789", "predict-token-0123456789"
    settings = InferenceSettings(
        shared=stack.shared_as(DatabaseRole.INFERENCE),
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(tmp_path / "spool"),
        history_database_url=stack.database_url_as(DatabaseRole.ANALYST),
        auth_tokens=f"reader {reader} ListStudentPredictions\npredictor {predictor} Predict",
    )
    running = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            request = api.ListStudentPredictionsRequest(student_id="hist-1", page_size=3)
            page = await stub.ListStudentPredictions(
                request, metadata=(("authorization", f"Bearer {reader}"),), timeout=10
            )
            assert len(page.predictions) == 3
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListStudentPredictions(
                    request, metadata=(("authorization", f"Bearer {predictor}"),), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await running.stop(grace_s=1)
