"""Ground truth over gRPC: RecordOutcomes publishes outcome events and the recorder writes them.

Since issue 15 an OK answer means what it means for Predict: the outcomes were handed to Kafka
(or the spool) and will be recorded. So the rows appear shortly after the answer, and a call
succeeds while PostgreSQL is down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from infra.devstack import PostgresServer
from recorder_service.settings import Settings as RecorderSettings
from studentperf.config import DatabaseRole
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests.integration.conftest import (
    RecorderProcess,
    Stack,
    fresh_topic_and_database,
    running_postgres,
)
from tests.integration.helpers import count_rows, eventually
from tests.integration.recorder_support import Raw, make_outcome_event, produce, raw_outcome

pytestmark = pytest.mark.usefixtures("recorder")


def outcome(student_id: str, term: str = "2026-spring", score: float | None = 70.0) -> api.Outcome:
    message = api.Outcome(student_id=student_id, term=term)
    if score is not None:
        message.final_score = score
    return message


async def record(
    stub: api_grpc.PredictionServiceAsyncStub, *outcomes: api.Outcome
) -> list[api.RecordOutcomeResult]:
    request = api.RecordOutcomesRequest(outcomes=list(outcomes))
    return list((await stub.RecordOutcomes(request, timeout=10)).results)


async def score_of(db: asyncpg.Pool, student_id: str, term: str = "2026-spring") -> float | None:
    found: float | None = await db.fetchval(
        "SELECT final_score FROM outcomes WHERE student_id = $1 AND term = $2", student_id, term
    )
    return found


async def wait_score(
    db: asyncpg.Pool, student_id: str, score: float, term: str = "2026-spring"
) -> None:
    probe = count_rows(
        db,
        "SELECT count(*) FROM outcomes WHERE student_id = $1 AND term = $2 AND final_score = $3",
        student_id,
        term,
        score,
    )
    assert await eventually(probe, 1, timeout=20) == 1, (student_id, term, score)


async def test_outcomes_are_recorded_a_later_one_replaces_and_unknown_students_are_added(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    first = await record(stub, outcome("out-1", score=61.5), outcome("out-2", term="2025-fall"))
    # Accepted, each with its event's id; replaced and student_added are deprecated (false).
    assert [r.WhichOneof("result") for r in first] == ["stored", "stored"]
    assert all(uuid.UUID(r.stored.event_id).version == 4 for r in first)
    assert not any(r.stored.replaced or r.stored.student_added for r in first)
    await wait_score(db, "out-2", 70.0, term="2025-fall")
    await wait_score(db, "out-1", 61.5)
    again = await record(stub, outcome("out-1", score=64.0))
    assert again[0].stored.event_id and not again[0].stored.replaced
    await wait_score(db, "out-1", 64.0)
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


async def test_a_late_older_outcome_does_not_replace_a_newer_one(
    stack: Stack, db: asyncpg.Pool
) -> None:
    """A spool replays late: an event made before the stored one arrives after it. It must
    not win; and the stored event published again (a duplicate, at a later offset) changes
    nothing (not even updated_at, when the score last changed)."""
    newer = make_outcome_event("late-1", "2026-spring", 80.0, seconds=1_780_000_100)
    older = make_outcome_event("late-1", "2026-spring", 55.0, seconds=1_780_000_000)

    # Another term of the same student (so the same partition, after the others): once it is
    # stored, the records before it have been written too.
    def marker(score: float) -> Raw:
        later = make_outcome_event("late-1", "2026-fall", score, seconds=1_780_000_200 + int(score))
        return raw_outcome(later)

    async def spring() -> tuple[float, object]:
        row = await db.fetchrow(
            "SELECT final_score, updated_at FROM outcomes"
            " WHERE student_id = 'late-1' AND term = '2026-spring'"
        )
        return row["final_score"], row["updated_at"]

    bootstrap = stack.kafka.bootstrap_servers
    await produce(bootstrap, stack.topic, [raw_outcome(newer)])
    await wait_score(db, "late-1", 80.0)
    first = await spring()
    await produce(bootstrap, stack.topic, [raw_outcome(older), marker(1.0)])
    await wait_score(db, "late-1", 1.0, term="2026-fall")
    after_older = await spring()
    await produce(bootstrap, stack.topic, [raw_outcome(newer), marker(2.0)])
    await wait_score(db, "late-1", 2.0, term="2026-fall")
    after_duplicate = await spring()
    print(
        f"\nlate replay: stored {first[0]}, then older 55.0 -> {after_older[0]},"
        f" then a duplicate of 80.0 -> {after_duplicate[0]}"
        f" (updated_at kept: {after_duplicate[1] == first[1]})"
    )
    assert after_older == first
    assert after_duplicate == first


async def test_a_prediction_s_profile_replaces_the_placeholder(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    await record(stub, outcome("out-later"))
    await wait_score(db, "out-later", 70.0)
    student = pb.Student(profile=pb.StudentProfile(student_id="out-later", age=15))
    await stub.Predict(api.PredictRequest(student=student), timeout=10)
    probe = count_rows(db, "SELECT count(*) FROM students WHERE student_id='out-later' AND age=15")
    assert await eventually(probe, 1, timeout=15) == 1


async def test_bad_outcomes_are_refused_alone_naming_the_field(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    results = await record(
        stub,
        outcome("out-4", term="Spring 2026"),
        outcome("out-5", score=None),
        outcome("out-6", score=101),
        outcome("out-ok-3"),
    )
    assert [r.WhichOneof("result") for r in results] == ["error", "error", "error", "stored"]
    assert [r.error.bad_request.field_violations[0].field for r in results[:3]] == [
        "outcomes[0].term",
        "outcomes[1].final_score",
        "outcomes[2].final_score",
    ]
    assert all(r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for r in results[:3])
    # Published in one publish, after the refused ones: once it is stored, none of them is.
    await wait_score(db, "out-ok-3", 70.0)
    stored = await db.fetchval("SELECT count(*) FROM outcomes WHERE student_id LIKE 'out-_'")
    assert stored == 2  # out-1 and out-2 from the first test; none of 4, 5, 6


def _old_response_class() -> type[Message]:
    """RecordOutcomesResponse as a client built before issue 15 knows it: OutcomeStored with
    replaced and student_added only."""
    file = descriptor_pb2.FileDescriptorProto(
        name="old_outcomes.proto", package="old", syntax="proto3"
    )
    stored = file.message_type.add(name="OutcomeStored")
    for number, name in ((1, "replaced"), (2, "student_added")):
        stored.field.add(name=name, number=number, type=8, label=1)  # bool, optional
    result = file.message_type.add(name="RecordOutcomeResult")
    result.oneof_decl.add(name="result")
    result.field.add(
        name="stored", number=1, type=11, label=1, type_name=".old.OutcomeStored", oneof_index=0
    )
    result.field.add(name="error", number=2, type=12, label=1, oneof_index=0)  # bytes
    response = file.message_type.add(name="RecordOutcomesResponse")
    response.field.add(
        name="results", number=1, type=11, label=3, type_name=".old.RecordOutcomeResult"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("old.RecordOutcomesResponse"))


async def test_an_old_client_still_reads_the_answer(
    inference: RunningServer, db: asyncpg.Pool
) -> None:
    """Unchanged request; the answer decodes with the old schema, each outcome `stored`."""
    port = inference.port
    old = _old_response_class()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[api.RecordOutcomesRequest, Any]
        call = channel.unary_unary(
            "/studentperf.v1.PredictionService/RecordOutcomes",
            request_serializer=api.RecordOutcomesRequest.SerializeToString,
            response_deserializer=old.FromString,
        )
        answer = await call(api.RecordOutcomesRequest(outcomes=[outcome("out-old")]), timeout=10)
    [result] = answer.results
    assert result.WhichOneof("result") == "stored"
    assert (result.stored.replaced, result.stored.student_added) == (False, False)
    await wait_score(db, "out-old", 70.0)


@pytest.fixture(scope="module")
async def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PostgresServer]:
    """A PostgreSQL of this module's own, to stop: never the session's."""
    async for server in running_postgres(tmp_path_factory.mktemp("outcomes-pg")):
        yield server
        if not server.running:
            server.start()
            await server.wait_ready(60)


async def test_record_outcomes_works_while_postgres_is_down(
    stack: Stack, own_postgres: PostgresServer, tmp_path: Path
) -> None:
    name = await fresh_topic_and_database(stack.kafka, own_postgres, "o")
    owner_url = own_postgres.dsn(name)
    # The inference service gets a database URL it never uses: it holds no connection now.
    shared = replace(stack.shared, kafka_topic=name, database_url=owner_url)
    recorder_url = own_postgres.dsn(name, user=DatabaseRole.RECORDER)
    recorder = RecorderProcess(
        RecorderSettings(shared=replace(shared, database_url=recorder_url), batch_max_wait_ms=50)
    )
    recorder.start()
    settings = InferenceSettings(
        shared=shared,
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(tmp_path / "spool"),
    )
    running = await start_server(settings)
    sent = [outcome(f"down-{i}", score=float(i)) for i in range(20)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            # The recorder is consuming and writing before the database goes: one stored
            # outcome shows it (else a recorder still starting up is what the test measures).
            await record(stub, outcome("up-0", score=50.0))
            async with asyncpg.create_pool(owner_url, min_size=1, max_size=1) as db:
                up = count_rows(db, "SELECT count(*) FROM outcomes WHERE student_id = 'up-0'")
                assert await eventually(up, 1, timeout=60) == 1
            own_postgres.stop()
            results = await record(stub, *sent[:10])
            results += await record(stub, *sent[10:])
            student = pb.Student(profile=pb.StudentProfile(student_id="down-0"))
            assert (await stub.Predict(api.PredictRequest(student=student), timeout=10)).prediction
        accepted = sum(r.WhichOneof("result") == "stored" for r in results)
        own_postgres.start()
        await own_postgres.wait_ready(60)
        async with asyncpg.create_pool(owner_url, min_size=1, max_size=1) as db:
            probe = count_rows(db, "SELECT count(*) FROM outcomes WHERE student_id LIKE 'down-%'")
            stored = await eventually(probe, len(sent), timeout=60)
            scores = await db.fetch(
                "SELECT student_id, final_score FROM outcomes WHERE student_id LIKE 'down-%'"
            )
        print(
            f"\npostgres down: sent {len(sent)}, answered OK {accepted}, stored once back {stored}"
        )
        assert accepted == len(sent)
        assert {(r["student_id"], r["final_score"]) for r in scores} == {
            (o.student_id, o.final_score) for o in sent
        }
    finally:
        await running.stop(grace_s=1)
        await recorder.stop()
