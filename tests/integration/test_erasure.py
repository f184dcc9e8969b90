"""Erasure that sticks (issue 15): EraseStudent against the real broker and database.

The full round (predictions and outcomes, erase, every table empty of the student, the audit
row without the id in clear, then the whole topic replayed from offset 0 by a new consumer
group: the student stays gone, a later enrolment is stored), erasing the unknown and twice,
the grant of its own, the database away, and the spool: with Kafka down, the student's spooled
events are dropped from disk and never replayed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inference_service.server import RunningServer
from inference_service.spool import read_segment
from infra.devstack import KafkaBroker, PostgresServer
from recorder_service.erasure import student_hash
from recorder_service.settings import DEAD_LETTER_SUFFIX, DEV_ERASURE_KEY
from recorder_service.settings import Settings as RecorderSettings
from studentperf import envelope
from studentperf.config import DatabaseRole, SharedSettings
from studentperf.persistence.erasure import ERASED_TABLES, ERASURE_ROLE
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.erasure_event_pb2 import ErasureEvent
from tests.integration.conftest import (
    REPO,
    RecorderProcess,
    Stack,
    fresh_topic_and_database,
    inference_settings,
    running_kafka,
    serving,
)
from tests.integration.helpers import count_rows, eventually, group_lag, read_all, student
from tests.integration.recorder_support import (
    Raw,
    make_event,
    make_outcome_event,
    produce,
    raw,
    raw_outcome,
)

pytestmark = pytest.mark.usefixtures("recorder")

# Long enough for the recorder on a loaded machine: the answer then says what was removed.
CONFIRM_WAIT_S = 20.0
TOKENS = {
    "predictor": ("predictor-token-0123456789", "Predict,BatchPredict"),
    "registrar": ("registrar-token-0123456789", "EraseStudent"),
    "admin": ("admin-token-0123456789abcdef", "*"),
}


@pytest.fixture(scope="module")
async def erasing(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    """A server that waits for the recorder's audit row long enough to confirm."""
    settings = inference_settings(
        stack, tmp_path_factory.mktemp("erase-spool"), erasure_wait_s=CONFIRM_WAIT_S
    )
    async for running in serving(settings):
        yield running


@pytest.fixture(scope="module")
async def eraser(erasing: RunningServer) -> AsyncIterator[api_grpc.PredictionServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{erasing.port}") as channel:
        yield api_grpc.PredictionServiceStub(channel)


def rows_of(student_id: str) -> str:
    return " + ".join(
        f"(SELECT count(*) FROM {table} WHERE student_id = '{student_id}')"
        for table in ERASED_TABLES
    )


async def counts_of(db: asyncpg.Pool, student_id: str) -> dict[str, int]:
    found = {}
    for table in ERASED_TABLES:
        sql = f"SELECT count(*) FROM {table} WHERE student_id = $1"
        found[table] = int(await db.fetchval(sql, student_id))
    return found


async def predict(stub: api_grpc.PredictionServiceAsyncStub, student_id: str, gpa: float) -> str:
    answer = await stub.Predict(
        api.PredictRequest(student=student(student_id, previous_gpa=gpa)), timeout=10
    )
    return str(answer.prediction.prediction_id)


async def test_erasure_removes_every_row_and_a_replay_from_zero_does_not_bring_it_back(
    eraser: api_grpc.PredictionServiceAsyncStub,
    db: asyncpg.Pool,
    stack: Stack,
    recorder: RecorderProcess,
) -> None:
    sid, bystander = "erase-round-1", "erase-bystander-1"
    for gpa in (2.0, 3.0, 3.5):
        await predict(eraser, sid, gpa)
    await predict(eraser, bystander, 2.5)
    await eraser.RecordOutcomes(
        api.RecordOutcomesRequest(
            outcomes=[
                api.Outcome(student_id=sid, term="2026-spring", final_score=61.0),
                api.Outcome(student_id=sid, term="2026-fall", final_score=64.0),
            ]
        ),
        timeout=10,
    )
    assert await eventually(count_rows(db, f"SELECT {rows_of(sid)}"), 3 + 2 + 1 + 3 + 1) == 10
    before = await counts_of(db, sid)
    bystander_before = await counts_of(db, bystander)

    answer = await eraser.EraseStudent(
        api.EraseStudentRequest(student_id=sid, reason="ticket-4711"), timeout=CONFIRM_WAIT_S + 10
    )
    print(f"\nerase {sid}: {answer.summary}; removed {dict(answer.removed)}")
    assert answer.confirmed
    assert (
        dict(answer.removed)
        == before
        == {
            "predictions": 3,
            "outcomes": 2,
            "student_profiles": 1,
            "academic_records": 3,
            "students": 1,
        }
    )
    assert answer.summary == (
        "removed 3 from academic_records, 2 from outcomes, 3 from predictions,"
        " 1 from student_profiles, 1 from students"
    )
    assert await counts_of(db, sid) == dict.fromkeys(ERASED_TABLES, 0)
    assert await counts_of(db, bystander) == bystander_before

    audit = await db.fetchrow(
        "SELECT *, row_to_json(e)::text AS whole FROM erasures e WHERE event_id = $1",
        uuid.UUID(answer.erasure_id),
    )
    assert audit is not None
    assert bytes(audit["student_hash"]) == student_hash(DEV_ERASURE_KEY, sid)
    assert audit["requested_by"] == "anonymous" and audit["reason"] == "ticket-4711"
    assert json.loads(audit["removed"]) == before
    assert audit["applied_at"] >= audit["erased_as_of"]
    assert sid not in audit["whole"] and sid.encode().hex() not in audit["whole"]

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await eraser.ListStudentPredictions(
            api.ListStudentPredictionsRequest(student_id=sid), timeout=10
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # its history is gone too

    # A new enrolment after the erasure is stored.
    enrolled = await predict(eraser, sid, 1.5)
    is_stored = count_rows(
        db, "SELECT count(*) FROM predictions WHERE prediction_id = $1", enrolled
    )
    assert await eventually(is_stored, 1) == 1

    # The whole topic again, from offset 0, by a new consumer group into the same database.
    await recorder.stop()
    group = f"erase-replay-{uuid.uuid4().hex[:8]}"
    recorder.start(consumer_group=group)
    try:
        lag = lambda: group_lag(stack.shared.kafka_bootstrap_servers, group, stack.topic)  # noqa: E731
        assert await eventually(lag, 0, timeout=60) == 0
    finally:
        replayed = await recorder.stop()
        recorder.start(consumer_group=RecorderSettings.consumer_group)
    after = await counts_of(db, sid)
    print(
        f"replay from offset 0 (group {group}): {replayed.stored} stored, "
        f"{replayed.already_stored} already stored, {replayed.health.events_erased} skipped as "
        f"erased, {replayed.health.erasures_applied} erasures applied again; "
        f"rows of {sid} now {after}"
    )
    # Only the enrolment after the erasure: its prediction, its inputs, its current facts.
    assert after == {
        "predictions": 1,
        "outcomes": 0,
        "student_profiles": 1,
        "academic_records": 1,
        "students": 1,
    }
    assert replayed.health.events_erased >= 5  # 3 predictions, 2 outcomes of the student
    assert replayed.health.erasures_applied == 0  # each erasure once, by its event id
    assert (
        await db.fetchval(
            "SELECT count(*) FROM erasures WHERE event_id = $1", uuid.UUID(answer.erasure_id)
        )
        == 1
    )
    assert await counts_of(db, bystander) == bystander_before


async def test_erasing_an_unknown_student_or_twice_removes_nothing(
    eraser: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    unknown = await eraser.EraseStudent(
        api.EraseStudentRequest(student_id="never-seen-1"), timeout=CONFIRM_WAIT_S + 10
    )
    print(f"\nerase an unknown student: {unknown.summary}")
    assert unknown.confirmed and not unknown.removed and unknown.summary == "removed nothing"

    sid = "erase-twice-1"
    await predict(eraser, sid, 3.0)
    assert await eventually(count_rows(db, f"SELECT {rows_of(sid)}"), 4) == 4
    first = await eraser.EraseStudent(
        api.EraseStudentRequest(student_id=sid), timeout=CONFIRM_WAIT_S + 10
    )
    second = await eraser.EraseStudent(
        api.EraseStudentRequest(student_id=sid), timeout=CONFIRM_WAIT_S + 10
    )
    print(f"erase twice: {first.summary}; then {second.summary}")
    assert first.confirmed and dict(first.removed)["predictions"] == 1
    assert second.confirmed and not second.removed and second.summary == "removed nothing"
    assert first.erasure_id != second.erasure_id
    audits = await db.fetch(
        "SELECT removed FROM erasures WHERE student_hash = $1 ORDER BY erased_as_of",
        student_hash(DEV_ERASURE_KEY, sid),
    )
    assert [json.loads(a["removed"]) for a in audits] == [dict(first.removed), {}]


async def test_bad_requests_name_the_field(eraser: api_grpc.PredictionServiceAsyncStub) -> None:
    for request, field in [
        (api.EraseStudentRequest(student_id=""), "student_id"),
        (api.EraseStudentRequest(student_id="s 1"), "student_id"),
        (api.EraseStudentRequest(student_id="s-1", reason="asked by jane@example.com"), "reason"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await eraser.EraseStudent(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(refused.value)
        assert status is not None
        detail = error_details_pb2.BadRequest()
        status.details[0].Unpack(detail)
        assert [v.field for v in detail.field_violations] == [field]


def erase_command(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m studentperf.client.erase`, what `make erase` runs, without a token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDENTPERF_TOKEN")}
    command = [sys.executable, "-m", "studentperf.client.erase", "--target", f"127.0.0.1:{port}"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


async def test_the_erase_command_prints_what_was_removed_and_fails_on_errors(
    erasing: RunningServer, eraser: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    sid = "erase-command-1"
    await predict(eraser, sid, 2.0)
    assert await eventually(count_rows(db, f"SELECT {rows_of(sid)}"), 4) == 4
    done = await asyncio.to_thread(erase_command, erasing.port, sid, "--reason", "ticket-7")
    print(f"\n$ python -m studentperf.client.erase {sid}\n{done.stdout}{done.stderr}")
    assert done.returncode == 0
    assert "removed 1 from academic_records" in done.stdout and "  predictions: 1" in done.stdout
    again = await asyncio.to_thread(erase_command, erasing.port, sid)
    assert again.returncode == 0 and "removed nothing" in again.stdout
    bad = await asyncio.to_thread(erase_command, erasing.port, "s 1")
    print(f"$ python -m studentperf.client.erase 's 1'\n{bad.stderr}")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "student_id" in bad.stderr
    assert await db.fetchval(f"SELECT {rows_of(sid)}") == 0


async def test_erase_student_is_a_grant_of_its_own(
    stack: Stack, db: asyncpg.Pool, tmp_path: Path
) -> None:
    table = "\n".join(f"{name} {token} {methods}" for name, (token, methods) in TOKENS.items())
    settings = inference_settings(
        stack, tmp_path / "spool", auth_tokens=table, erasure_wait_s=CONFIRM_WAIT_S
    )
    async for running in serving(settings):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)

            async def erase(
                client: str, sid: str, stub: api_grpc.PredictionServiceAsyncStub = stub
            ) -> api.EraseStudentResponse:
                metadata = (("authorization", f"Bearer {TOKENS[client][0]}"),)
                request = api.EraseStudentRequest(student_id=sid)
                answer: api.EraseStudentResponse = await stub.EraseStudent(
                    request, metadata=metadata, timeout=CONFIRM_WAIT_S + 10
                )
                return answer

            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await erase("predictor", "grant-1")
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            by_name = await erase("registrar", "grant-2")
            by_star = await erase("admin", "grant-3")
    who = {
        r["event_id"]: r["requested_by"]
        for r in await db.fetch("SELECT event_id, requested_by FROM erasures")
    }
    assert who[uuid.UUID(by_name.erasure_id)] == "registrar"
    assert who[uuid.UUID(by_star.erasure_id)] == "admin"


async def test_with_the_database_away_the_erasure_is_accepted_not_confirmed(
    stack: Stack, tmp_path: Path
) -> None:
    settings = inference_settings(
        stack,
        tmp_path / "spool",
        history_database_url="postgresql://studentperf_analyst@127.0.0.1:1/nowhere",
        erasure_wait_s=2.0,
    )
    async for running in serving(settings):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            answer = await stub.EraseStudent(
                api.EraseStudentRequest(student_id="away-1"), timeout=30
            )
    print(f"\ndatabase away: {answer.summary}")
    assert not answer.confirmed and answer.erasure_id
    assert "not yet confirmed" in answer.summary


@pytest.fixture(scope="module")
async def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaBroker]:
    """A broker of this module's own, stopped by the spool test."""
    async for broker in running_kafka(tmp_path_factory.mktemp("erase-kafka")):
        yield broker


async def keys_in_topic(bootstrap: str, topic: str) -> list[tuple[bytes, bool]]:
    """Every record of the topic: its key, and whether it is an erasure event."""
    records = await read_all(bootstrap, topic)
    return [(r.key, envelope.is_erasure(r.headers)) for r in records]


async def test_the_student_s_spooled_events_are_dropped_and_never_replayed(
    own_kafka: KafkaBroker, postgres: PostgresServer, stack: Stack, tmp_path: Path
) -> None:
    name = await fresh_topic_and_database(own_kafka, postgres, "erase")
    shared = SharedSettings(
        kafka_bootstrap_servers=own_kafka.bootstrap_servers,
        kafka_topic=name,
        database_url=postgres.dsn(name),
    )
    own = Stack(own_kafka, shared, stack.model_path)
    spool = tmp_path / "spool"
    settings = inference_settings(own, spool, publish_timeout_s=0.5, erasure_wait_s=0.5)
    sid, other = "spooled-erase-1", "spooled-keep-1"
    # Down before the service starts, so every event goes to the spool and none to the Kafka
    # client: a send that timed out stays in the client's memory, which no erasure can reach
    # (README, Erasure); the recorder refuses such an event when it comes.
    own_kafka.stop()
    async for running in serving(settings):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            for gpa in (1.0, 2.0, 3.0):
                await predict(stub, sid, gpa)
                await predict(stub, other, gpa)
            spooled_before = running.publisher.spool.records
            answer = await stub.EraseStudent(api.EraseStudentRequest(student_id=sid), timeout=30)
            on_disk = [
                (record.key, envelope.is_erasure(record.headers))
                for segment in sorted(spool.glob("*.spool"))
                for record in read_segment(segment).records
            ]
            print(
                f"\nspool before the erasure: {spooled_before} event(s); after: "
                f"{running.publisher.spool.records}; on disk (key, is erasure): {on_disk}"
            )
            assert spooled_before == 6
            assert not answer.confirmed  # Kafka is down: spooled, accepted
            # The student's predictions are gone from disk; only the erasure event is theirs.
            assert [e for key, e in on_disk if key == sid.encode()] == [True]
            assert on_disk.count((other.encode(), False)) == 3 and len(on_disk) == 4
            own_kafka.start()
            await own_kafka.wait_ready(120)
            assert await eventually(partial(_spool_depth, running), 0, timeout=60) == 0

    keys = await keys_in_topic(own_kafka.bootstrap_servers, name)
    of_student = [is_erasure for key, is_erasure in keys if key == sid.encode()]
    print(f"topic after the replay: {len(keys)} record(s); of the erased student: {of_student}")
    assert of_student == [True]  # only the erasure event reached Kafka
    assert sum(1 for key, _ in keys if key == other.encode()) == 3

    process = RecorderProcess(
        RecorderSettings(shared=own.shared_as(DatabaseRole.RECORDER), batch_max_wait_ms=50)
    )
    process.start()
    try:
        conn = await asyncpg.connect(own.database_url)
        try:
            stored = lambda: conn.fetchval("SELECT count(*) FROM predictions")  # noqa: E731
            assert await eventually(stored, 3, timeout=60) == 3
            erased = lambda: conn.fetchval("SELECT count(*) FROM erasures")  # noqa: E731
            assert await eventually(erased, 1, timeout=30) == 1
            rows = int(await conn.fetchval(f"SELECT {rows_of(sid)}"))
        finally:
            await conn.close()
    finally:
        await process.stop()
    print(f"recorded: 3 predictions (the other student's); rows of {sid}: {rows}")
    assert rows == 0


async def _spool_depth(running: RunningServer) -> int:
    return running.publisher.spool.records


async def test_only_the_erasure_role_deletes_and_the_audit_is_read_only_to_readers(
    stack: Stack,
) -> None:
    denied: list[str] = []
    allowed: list[str] = []

    async def attempt(role: DatabaseRole, sql: str, *, as_erasure: bool = False) -> None:
        conn = await asyncpg.connect(stack.database_url_as(role))
        try:
            async with conn.transaction():
                if as_erasure:
                    await conn.execute(f"SET LOCAL ROLE {ERASURE_ROLE}")
                await conn.execute(sql)
                allowed.append(f"{role}{'/erasure' if as_erasure else ''}: {sql}")
                raise _RollBack
        except asyncpg.InsufficientPrivilegeError:
            denied.append(f"{role}{'/erasure' if as_erasure else ''}: {sql}")
        except _RollBack:
            pass
        finally:
            await conn.close()

    await attempt(DatabaseRole.ANALYST, "SELECT * FROM erasures")
    await attempt(
        DatabaseRole.RECORDER, "SELECT event_id, student_hash, erased_as_of FROM erasures"
    )
    await attempt(
        DatabaseRole.RECORDER, "DELETE FROM predictions WHERE student_id = 'x'", as_erasure=True
    )
    expected_allowed = list(allowed)
    for role, sql, as_erasure in [
        (DatabaseRole.INFERENCE, "SELECT count(*) FROM erasures", False),
        (DatabaseRole.ANALYST, "DELETE FROM erasures", False),
        (DatabaseRole.RECORDER, "DELETE FROM predictions WHERE student_id = 'x'", False),
        (DatabaseRole.RECORDER, "SELECT requested_by FROM erasures", False),
        (DatabaseRole.RECORDER, "UPDATE erasures SET reason = NULL", True),
        (DatabaseRole.RECORDER, "DELETE FROM erasures", True),
        (DatabaseRole.RECORDER, "DELETE FROM model_versions", True),
    ]:
        await attempt(role, sql, as_erasure=as_erasure)
    print(f"\nallowed: {allowed}\ndenied: {denied}")
    assert allowed == expected_allowed and len(expected_allowed) == 3
    assert len(denied) == 7


class _RollBack(Exception):
    """Leaves an attempt's transaction without a trace."""


def invalid_outcome(student_id: str, when: datetime) -> Raw:
    """An outcome event of the student the recorder refuses as invalid (its term breaks the
    rule): it decodes, names the student and its time, and is never stored."""
    return raw_outcome(
        make_outcome_event(student_id, "no term", 50.0, seconds=int(when.timestamp()))
    )


async def dead_letters_by_source(bootstrap: str, topic: str) -> Counter[tuple[int, int]]:
    """The dead letters of `topic`'s records: how many there are of each (partition, offset)."""
    letters = await read_all(bootstrap, topic + DEAD_LETTER_SUFFIX)
    found: Counter[tuple[int, int]] = Counter()
    for letter in letters:
        h = dict(letter.headers)
        if h.get(envelope.DEAD_LETTER_SOURCE_TOPIC_HEADER) == topic.encode():
            partition = int(h[envelope.DEAD_LETTER_SOURCE_PARTITION_HEADER] or b"")
            found[partition, int(h[envelope.DEAD_LETTER_SOURCE_OFFSET_HEADER] or b"")] += 1
    return found


async def test_an_erased_student_s_refused_records_are_skipped_not_dead_lettered(
    kafka: KafkaBroker, postgres: PostgresServer, stack: Stack
) -> None:
    # A topic and database of its own: the module's recorder must not dead-letter these too.
    name = await fresh_topic_and_database(kafka, postgres, "erasedletters")
    own = Stack(
        kafka,
        SharedSettings(
            kafka_bootstrap_servers=kafka.bootstrap_servers,
            kafka_topic=name,
            database_url=postgres.dsn(name),
        ),
        stack.model_path,
    )
    bootstrap = kafka.bootstrap_servers
    sid, bystander = "erased-letters-1", "kept-letters-1"
    before = datetime.now(UTC) - timedelta(minutes=1)
    future = make_event(sid, seconds=int((datetime.now(UTC) + timedelta(days=1)).timestamp()))
    earlier = [
        raw(make_event(sid, seconds=int(before.timestamp()))),  # stored, then erased
        # Refused by the database (age 5): a replay skips it before writing, as any row.
        raw(make_event(sid, age=5, seconds=int(before.timestamp()))),
        invalid_outcome(sid, before),  # invalid-event: refused after decoding
        Raw(sid.encode(), b"\x00\xff not an event"),  # undecodable: only the key names it
        raw(future),  # future-event: its occurred_at cannot place it
        invalid_outcome(bystander, before),  # not the erased student's: dead-lettered always
    ]
    recorder = RecorderProcess(
        RecorderSettings(shared=own.shared_as(DatabaseRole.RECORDER), batch_max_wait_ms=50)
    )

    async def run_to_the_end(group: str) -> None:
        lag = partial(group_lag, bootstrap, group, name)
        assert await eventually(lag, 0, timeout=60) == 0

    first_group = f"erased-letters-{uuid.uuid4().hex[:8]}"
    recorder.start(consumer_group=first_group)
    try:
        positions = await produce(bootstrap, name, earlier)
        await run_to_the_end(first_group)
        # Only now is the student erased: letters of before were the student's to send.
        erasure = ErasureEvent(
            schema_version=envelope.SCHEMA_VERSION,
            event_id=str(uuid.uuid4()),
            student_id=sid,
            requested_by="registrar",
        )
        erased_at = datetime.now(UTC)
        erasure.occurred_at.FromDatetime(erased_at)
        record = envelope.encode_erasure(erasure)
        later = [
            Raw(record.key, record.value, record.headers),
            # From an instance whose send was held up: it occurred before the erasure.
            invalid_outcome(sid, before),
            # A new enrolment's, after the erasure: dead-lettered as any other.
            invalid_outcome(sid, erased_at + timedelta(seconds=1)),
        ]
        positions += await produce(bootstrap, name, later)
        await run_to_the_end(first_group)
    finally:
        first = await recorder.stop()
    first_letters = await dead_letters_by_source(bootstrap, name)

    replay_group = f"erased-letters-replay-{uuid.uuid4().hex[:8]}"
    recorder.start(consumer_group=replay_group)
    try:
        await run_to_the_end(replay_group)
    finally:
        replay = await recorder.stop()
    replay_letters = await dead_letters_by_source(bootstrap, name) - first_letters

    labels = [
        "prediction",
        "refused by the database",
        "invalid outcome",
        "undecodable",
        "future",
        "bystander's invalid outcome",
        "erasure",
        "late invalid outcome",
        "new enrolment's invalid outcome",
    ]
    label_at = dict(zip(positions, labels, strict=True))
    first_sent = sorted(label_at[pos] for pos in first_letters)
    replay_sent = sorted(label_at[pos] for pos in replay_letters)
    print(
        f"\nfirst pass: {first.health.events_erased} skipped as erased, letters of {first_sent}"
        f"\nreplay from offset 0: {replay.health.events_erased} skipped as erased,"
        f" letters of {replay_sent}, by reason {dict(replay.health.dead_lettered)}"
    )
    # Before the erasure, the refused records of the student were dead-lettered; after it, a
    # record of the student from before it is skipped and counted, on the first pass as on
    # the replay: a letter would be a new copy of the erased student's data, kept for the
    # dead-letter topic's retention from now on.
    assert first_sent == sorted(
        [
            "refused by the database",
            "invalid outcome",
            "undecodable",
            "future",
            "bystander's invalid outcome",
            "new enrolment's invalid outcome",
        ]
    )
    assert first.health.events_erased == 1  # the late invalid outcome
    assert replay_sent == sorted(["bystander's invalid outcome", "new enrolment's invalid outcome"])
    # The prediction, the four refused records of before and the late one.
    assert replay.health.events_erased == 6
    assert dict(replay.health.dead_lettered) == {"invalid-event": 2}
