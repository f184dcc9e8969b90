"""The typed client (studentperf.client) against the real inference service: answers, batches
split over the limit in order, field violations without retries, retries while the server is
away, TLS with a client certificate and a bearer token."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from infra.devstack import free_port
from studentperf.client import (
    RetryEvent,
    RetryPolicy,
    ServiceError,
    StudentInput,
    aio,
    connect,
    outcome,
)
from studentperf.limits import DEFAULT_MAX_BATCH_SIZE, MAX_EXPLAINED_BATCH
from tests.integration.conftest import Stack
from tests.integration.test_security import Certs, certs  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("recorder")

SMALL_LIMIT = 40
FULL_TOKEN = "client-test-token-0123456789"
INFO_TOKEN = "client-info-token-0123456789"


async def serve(stack: Stack, spool: Path, port: int = 0, **changes: object) -> RunningServer:
    settings = InferenceSettings(
        shared=stack.shared,
        listen_address=f"127.0.0.1:{port}",
        models_dir=str(stack.model_path),
        spool_dir=str(spool),
        **changes,  # type: ignore[arg-type]
    )
    return await start_server(settings)


@pytest.fixture(scope="module")
async def small_batch_server(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    """A server whose batch limit is small, so splitting is seen without 10,000 students."""
    running = await serve(stack, tmp_path_factory.mktemp("spool"), max_batch_size=SMALL_LIMIT)
    yield running
    await running.stop(grace_s=5)


def students(count: int, bad_every: int = 0, prefix: str = "cl") -> list[StudentInput]:
    """Distinct students; with `bad_every`, every such one has an age the server refuses."""
    return [
        StudentInput(
            f"{prefix}-{i}",
            age=5 if bad_every and i % bad_every == bad_every - 1 else 10 + i % 80,
            attendance_percentage=i % 101,
            previous_gpa=(i % 41) / 10,
        )
        for i in range(count)
    ]


async def test_predict_answers_with_a_recorded_prediction(
    inference: RunningServer, db: asyncpg.Pool
) -> None:
    async with aio.connect(f"127.0.0.1:{inference.port}") as client:
        answer = await client.predict(
            StudentInput("client-1", age=16, gender="female", previous_gpa=3.1), top_factors=2
        )
        info = await client.model_info()
    prediction = answer.prediction
    assert 0 <= prediction.predicted_final_score <= 100
    assert prediction.model_version == info.model_version
    assert len(prediction.explanation.top_factors) == 2
    row = await _wait_for_row(db, prediction.prediction_id)
    assert row == "client-1"


async def _wait_for_row(db: asyncpg.Pool, prediction_id: str, timeout: float = 20) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        student = await db.fetchval(
            "SELECT student_id FROM predictions WHERE prediction_id = $1", uuid.UUID(prediction_id)
        )
        if student is not None or time.monotonic() > deadline:
            return student  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)


async def test_predict_many_splits_over_the_limit_and_keeps_input_order(
    small_batch_server: RunningServer, db: asyncpg.Pool
) -> None:
    many = students(SMALL_LIMIT * 4 + 7, bad_every=23, prefix="order")
    async with aio.connect(f"127.0.0.1:{small_batch_server.port}") as client:
        with pytest.raises(ServiceError) as refused:  # one call over the limit is refused
            await client.batch_predict(many)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        # The server's limit is lowered here, so the client is told it.
        results = await client.predict_many(many, batch_size=SMALL_LIMIT, concurrency=3)
    assert len(results) == len(many)
    ids: dict[str, str] = {}
    for index, (student, result) in enumerate(zip(many, results, strict=True)):
        if student.age == 5:
            [violation] = result.error.bad_request.field_violations
            assert violation.field == f"students[{index}].profile.age"
        else:
            ids[result.prediction.prediction_id] = student.student_id
    # The recorder's rows say which student each prediction id was made for.
    deadline = time.monotonic() + 30
    while True:
        rows = await db.fetch(
            "SELECT prediction_id::text AS id, student_id FROM predictions WHERE prediction_id"
            " = ANY($1::uuid[])",
            list(ids),
        )
        if len(rows) == len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert {row["id"]: row["student_id"] for row in rows} == ids


async def test_predict_many_with_explanations_splits_at_the_explained_limit(
    inference: RunningServer,
) -> None:
    many = students(MAX_EXPLAINED_BATCH + 3, prefix="explained")
    async with aio.connect(f"127.0.0.1:{inference.port}", default_deadline_s=60) as client:
        results = await client.predict_many(many, top_factors=1)
    assert len(results) == len(many)
    assert all(len(r.prediction.explanation.top_factors) == 1 for r in results)


async def test_invalid_input_names_the_fields_and_is_not_retried(
    inference: RunningServer,
) -> None:
    retries: list[RetryEvent] = []
    async with aio.connect(f"127.0.0.1:{inference.port}", on_retry=retries.append) as client:
        with pytest.raises(ServiceError) as refused:
            await client.predict(StudentInput("bad id!", age=5, previous_gpa=9))
    error = refused.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.attempts == 1 and retries == []
    assert {v.field for v in error.field_violations} == {
        "student.profile.student_id",
        "student.profile.age",
        "student.academic_record.previous_gpa",
    }


async def test_record_outcomes_answers_per_outcome(inference: RunningServer) -> None:
    async with aio.connect(f"127.0.0.1:{inference.port}") as client:
        answer = await client.record_outcomes(
            [outcome("client-1", "2026-spring", 71.5), outcome("client-1", "spring", 40)]
        )
    stored, refused = answer.results
    assert stored.HasField("stored")
    assert refused.error.bad_request.field_violations[0].field == "outcomes[1].term"


async def test_retries_reach_a_server_that_starts_after_the_call_began_and_one_restarted(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    retries: list[RetryEvent] = []
    first_retry = asyncio.Event()

    def seen(event: RetryEvent) -> None:
        retries.append(event)
        first_retry.set()

    policy = RetryPolicy(max_attempts=200, initial_backoff_s=0.05, max_backoff_s=0.5)
    client = aio.connect(f"127.0.0.1:{port}", retry=policy, on_retry=seen, default_deadline_s=60)
    async with client:
        # Nothing listens yet: the call fails with UNAVAILABLE and keeps retrying.
        call = asyncio.create_task(client.predict(StudentInput("late-1", age=16)))
        await asyncio.wait_for(first_retry.wait(), 30)
        running = await serve(stack, tmp_path / "spool", port)
        try:
            started = time.monotonic()
            answer = await asyncio.wait_for(call, 60)
            assert answer.prediction.prediction_id
            assert retries and all(e.code == grpc.StatusCode.UNAVAILABLE for e in retries)
            # It gets through soon after the server is up: the channel's reconnect backoff is
            # capped (1 s), and our pauses are at most 0.5 s.
            assert time.monotonic() - started < 10

            # Stopped, then restarted on the same port while a call is retrying.
            await running.stop(grace_s=1)
            retries.clear()
            first_retry.clear()
            call = asyncio.create_task(client.predict(StudentInput("late-2", age=16)))
            await asyncio.wait_for(first_retry.wait(), 30)
            running = await serve(stack, tmp_path / "spool", port)
            answer = await asyncio.wait_for(call, 60)
            assert answer.prediction.prediction_id and retries
        finally:
            await running.stop(grace_s=1)


async def test_retrying_stops_at_the_deadline() -> None:
    port = free_port()  # nothing listens there
    retries: list[RetryEvent] = []
    policy = RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.2)
    async with aio.connect(f"127.0.0.1:{port}", retry=policy, on_retry=retries.append) as client:
        started = time.monotonic()
        with pytest.raises(ServiceError) as failed:
            await client.model_info(timeout=1.5)
        elapsed = time.monotonic() - started  # before the channel's close, which is not the call's
    assert failed.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    # It retried, then gave up long before its attempts ran out: the pauses it chose fit in the
    # deadline (each one is checked against the time left), whatever the machine's load.
    assert failed.value.attempts > 1
    assert failed.value.attempts == len(retries) + 1 < policy.max_attempts
    assert sum(r.pause_s for r in retries) < 1.5
    # Ignoring the deadline would take ~100 s (1000 attempts, pauses up to 0.2 s): a margin no
    # loaded machine reaches.
    assert elapsed < 30
    print(f"deadline 1.5 s: {failed.value.attempts} attempts in {elapsed:.2f} s")


async def test_the_blocking_client_predicts_and_splits_in_order(
    small_batch_server: RunningServer,
) -> None:
    many = students(SMALL_LIMIT * 2 + 1, bad_every=10, prefix="sync")

    def work() -> tuple[float, list[bool]]:
        with connect(f"127.0.0.1:{small_batch_server.port}") as client:
            one = client.predict(StudentInput("sync-one", age=15, previous_gpa=2.0))
            results = client.predict_many(many, batch_size=SMALL_LIMIT, concurrency=2)
            return one.prediction.predicted_final_score, [r.HasField("error") for r in results]

    # In a thread: the server under test runs on this event loop.
    score, errors = await asyncio.to_thread(work)
    assert 0 <= score <= 100
    assert errors == [s.age == 5 for s in many]


async def test_tls_client_certificate_and_token(
    stack: Stack,
    certs: Certs,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    running = await serve(
        stack,
        tmp_path / "spool",
        tls_cert_file=str(certs.server[1]),
        tls_key_file=str(certs.server[0]),
        tls_client_ca_file=str(certs.ca),
        auth_tokens=f"school-a {FULL_TOKEN} *\ndashboard {INFO_TOKEN} GetModelInfo\n",
    )
    tls = dict(
        tls=True,
        root_certificates=certs.ca,
        client_certificate=certs.client[1],
        client_key=certs.client[0],
    )
    target = f"localhost:{running.port}"
    try:
        async with aio.connect(target, token=FULL_TOKEN, **tls) as client:  # type: ignore[arg-type]
            answer = await client.predict(StudentInput("tls-1", age=16))
            assert answer.prediction.prediction_id
        async with aio.connect(target, token=INFO_TOKEN, **tls) as client:  # type: ignore[arg-type]
            assert (await client.model_info()).model_version
            with pytest.raises(ServiceError) as denied:
                await client.predict(StudentInput("tls-2", age=16))
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert denied.value.attempts == 1
        async with aio.connect(target, **tls) as client:  # type: ignore[arg-type]
            with pytest.raises(ServiceError) as unauthenticated:
                await client.model_info()
            assert unauthenticated.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await running.stop(grace_s=1)


async def test_the_blocking_client_retries_until_the_server_is_up(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    first_retry = threading.Event()
    policy = RetryPolicy(max_attempts=200, initial_backoff_s=0.05, max_backoff_s=0.5)

    def call() -> tuple[str, int]:
        retries: list[RetryEvent] = []

        def seen(event: RetryEvent) -> None:
            retries.append(event)
            first_retry.set()

        with connect(f"127.0.0.1:{port}", retry=policy, on_retry=seen) as client:
            answer = client.predict(StudentInput("late-sync", age=16), timeout=60)
        return answer.prediction.prediction_id, len(retries)

    # In a thread: the server it waits for is started on this event loop.
    worker = asyncio.create_task(asyncio.to_thread(call))
    assert await asyncio.to_thread(first_retry.wait, 30)
    running = await serve(stack, tmp_path / "spool", port)
    try:
        prediction_id, retried = await asyncio.wait_for(worker, 60)
        uuid.UUID(prediction_id)
        assert retried >= 1
    finally:
        await running.stop(grace_s=1)


async def test_predict_many_splits_at_the_default_limit(inference: RunningServer) -> None:
    """10,001 students, only their ids (the largest answers: every field imputed), against a
    server with the default limit: two calls, the second of one student."""
    refused = {0, 4_999, DEFAULT_MAX_BATCH_SIZE - 1, DEFAULT_MAX_BATCH_SIZE}
    many = [
        StudentInput(f"big-{i}", age=5 if i in refused else None)
        for i in range(DEFAULT_MAX_BATCH_SIZE + 1)
    ]
    async with aio.connect(f"127.0.0.1:{inference.port}", default_deadline_s=120) as client:
        results = await client.predict_many(many)
    assert len(results) == len(many)
    errors = {i for i, r in enumerate(results) if r.HasField("error")}
    assert errors == refused
    for i in refused:
        [violation] = results[i].error.bad_request.field_violations
        assert violation.field == f"students[{i}].profile.age"
    assert len(results[1].prediction.imputed_fields) == 9
