"""A student's current facts through the real recorder: merged fact by fact, by event time and
then log order; a prediction keeps exactly its own inputs; a far-future event is refused."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.devstack import KafkaBroker, PostgresServer
from recorder_service.settings import DEAD_LETTER_SUFFIX
from studentperf import envelope
from studentperf.migrate import migration_files
from studentperf.outcomes import OutcomeRow
from studentperf.persistence.outcomes import StoredOutcome, store_outcomes
from studentperf.persistence.student_facts import OUTSIDE_THE_LOG, merge_statement
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from studentperf.v1.import_event_pb2 import ImportEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import Stack
from tests.integration.helpers import count_rows, eventually, migrate_before, read_all
from tests.integration.recorder_support import (
    Raw,
    make_event,
    make_outcome_event,
    produce,
    raw,
    raw_outcome,
)
from trainer.db_source import read_labelled_rows
from trainer.import_events import import_event
from trainer.kaggle import KaggleRow

# The dead-letter topic before the recorder: the broker creates no topic by itself.
pytestmark = pytest.mark.usefixtures("dead_letter_topic", "recorder")

FACTS = (
    "SELECT age, gender, previous_gpa, attendance_percentage FROM students WHERE student_id = $1"
)


@pytest.fixture(scope="module")
async def dead_letter_topic(stack: Stack, kafka: KafkaBroker) -> AsyncIterator[None]:
    await kafka.create_topic(stack.topic + DEAD_LETTER_SUFFIX, partitions=3)
    yield


async def stored(db: asyncpg.Pool, ids: Sequence[str]) -> None:
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)", ids)
    assert await eventually(probe, len(ids), timeout=20) == len(ids)


async def predict(stub: api_grpc.PredictionServiceAsyncStub, student: pb.Student) -> str:
    answer = await stub.Predict(api.PredictRequest(student=student), timeout=10)
    return str(answer.prediction.prediction_id)


async def send(stack: Stack, db: asyncpg.Pool, *events: PredictionEvent) -> list[int]:
    """Produces the events in order, waits until all are stored; their offsets."""
    positions = await produce(
        stack.shared.kafka_bootstrap_servers, stack.topic, [raw(e) for e in events]
    )
    await stored(db, [e.event_id for e in events])
    return [offset for _, offset in positions]


def event(student_id: str, seconds: int, **facts: object) -> PredictionEvent:
    """An event giving exactly `facts` (profile or academic record), at `seconds`."""
    made = make_event(student_id, age=None, gpa=None, seconds=seconds)
    for name, value in facts.items():
        part = made.input.profile if name in ("age", "gender") else made.input.academic_record
        setattr(part, name, value)
    return made


async def test_a_sparse_request_keeps_what_was_known(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool
) -> None:
    full = pb.Student(profile=pb.StudentProfile(student_id="s-x", age=16, gender=pb.GENDER_MALE))
    first = await predict(stub, full)
    await stored(db, [first])
    sparse = await predict(stub, pb.Student(profile=pb.StudentProfile(student_id="s-x")))
    await stored(db, [sparse])

    facts = await db.fetchrow(FACTS, "s-x")
    print(f"\n[sparse] after an id-only request: age {facts['age']}, gender {facts['gender']}")
    assert (facts["age"], facts["gender"]) == (16, "male")
    # Each prediction still points at exactly the inputs it was made from.
    made_from = await db.fetch(
        "SELECT p.prediction_id::text AS id, sp.age, sp.gender FROM predictions p"
        " JOIN student_profiles sp USING (student_profile_id) WHERE p.student_id = 's-x'"
    )
    by_id = {r["id"]: (r["age"], r["gender"]) for r in made_from}
    assert by_id == {first: (16, "male"), sparse: (None, None)}


async def test_the_latest_gpa_is_the_last_given_and_the_trainer_reads_it(
    stub: api_grpc.PredictionServiceAsyncStub, db: asyncpg.Pool, stack: Stack
) -> None:
    for gpa in (2.0, 3.0, 2.0):  # the last repeats the first: same content, same record id
        record = pb.AcademicRecord(previous_gpa=gpa)
        student = pb.Student(
            profile=pb.StudentProfile(student_id="gpa-232"), academic_record=record
        )
        await stored(db, [await predict(stub, student)])
    assert (
        await db.fetchval("SELECT count(*) FROM academic_records WHERE student_id='gpa-232'") == 2
    )
    assert (await db.fetchrow(FACTS, "gpa-232"))["previous_gpa"] == 2.0

    async with db.acquire() as conn:
        await store_outcomes(conn, [OutcomeRow("gpa-232", "2026-spring", 71.0)], source="test")
    frame = (await read_labelled_rows(stack.database_url)).frame
    trained_on = frame.loc[frame["student_id"] == "gpa-232", "previous_gpa"].tolist()
    print(f"\n[2.0/3.0/2.0] students.previous_gpa 2.0, the trainer reads {trained_on}")
    assert trained_on == [2.0]


async def test_a_direct_outcome_is_stored_by_the_recorders_rule(db: asyncpg.Pool) -> None:
    # store_outcomes writes through the recorder's statement (persistence.outcomes): as of now,
    # outside the log, it replaces an older score and keeps one recorded later.
    async with db.acquire() as conn:
        first = await store_outcomes(
            conn, [OutcomeRow("direct-1", "2026-spring", 60.0)], source="test"
        )
        again = await store_outcomes(
            conn, [OutcomeRow("direct-1", "2026-spring", 65.0)], source="test"
        )
        # As an event stamped by a clock ahead is stored: accepted, and so first, later.
        await conn.execute(
            "UPDATE outcomes SET recorded_as_of = now() + interval '1 day',"
            " recorded_at = now() + interval '1 day' WHERE student_id = 'direct-1'"
        )
        later = await store_outcomes(
            conn, [OutcomeRow("direct-1", "2026-spring", 70.0)], source="test"
        )
        score, earlier = await conn.fetchrow(
            "SELECT final_score, recorded_at < now() + interval '1 hour' FROM outcomes"
            " WHERE student_id = 'direct-1'"
        )
    print(f"\n[direct outcome] 60, then 65, then 70 against one recorded later: {score}")
    assert first == [StoredOutcome(replaced=False, student_added=True)]
    assert again == [StoredOutcome(replaced=True, student_added=False)]
    assert later == [StoredOutcome(replaced=False, student_added=False)]
    assert score == 65.0
    assert earlier  # the 70 was accepted first, if not last


async def test_a_late_replay_fills_gaps_but_overrides_nothing_newer(
    stack: Stack, db: asyncpg.Pool
) -> None:
    now = int(time.time())
    await send(stack, db, event("late-1", now, age=17, previous_gpa=3.5))
    # Spooled while Kafka was away and replayed now: older, and later in the log.
    replayed = event(
        "late-1", now - 600, age=15, gender=pb.GENDER_FEMALE, previous_gpa=1.0,
        attendance_percentage=80.0,
    )  # fmt: skip
    await send(stack, db, replayed)
    facts = await db.fetchrow(FACTS, "late-1")
    print(f"\n[late replay] {dict(facts)}")
    assert dict(facts) == {
        "age": 17,  # newer: kept
        "gender": "female",  # the newer event left it out: filled
        "previous_gpa": 3.5,
        "attendance_percentage": 80.0,
    }
    # The replay's own prediction keeps its own inputs.
    row = await db.fetchrow(
        "SELECT sp.age, ar.previous_gpa FROM predictions p"
        " JOIN student_profiles sp USING (student_profile_id)"
        " JOIN academic_records ar USING (academic_record_id) WHERE p.prediction_id = $1",
        uuid.UUID(replayed.event_id),
    )
    assert (row["age"], row["previous_gpa"]) == (15, 1.0)


async def test_at_the_same_time_the_later_in_the_log_wins(stack: Stack, db: asyncpg.Pool) -> None:
    now = int(time.time())
    # Both in one batch (most likely), then one more in a later batch, all at the same time.
    offsets = await send(stack, db, event("tie-1", now, age=14), event("tie-1", now, age=15))
    assert offsets[1] > offsets[0]
    assert (await db.fetchrow(FACTS, "tie-1"))["age"] == 15
    [third] = await send(stack, db, event("tie-1", now, age=16))
    stored_at = await db.fetchrow(
        "SELECT age, age_log_offset FROM students WHERE student_id = 'tie-1'"
    )
    print(f"\n[tie] offsets {[*offsets, third]}: stored age {stored_at['age']}")
    assert (stored_at["age"], stored_at["age_log_offset"]) == (16, third)


async def dead_letters_of(stack: Stack, event_id: str) -> list[dict[str, bytes]]:
    letters = await read_all(stack.shared.kafka_bootstrap_servers, stack.topic + DEAD_LETTER_SUFFIX)
    mine = []
    for letter in letters:
        if (
            letter.value is not None
            and PredictionEvent.FromString(letter.value).event_id == event_id
        ):
            mine.append(dict(letter.headers))
    return mine


async def wait_committed(stack: Stack, offset: int, partition: int) -> None:
    """Until the recorder's group has committed past `offset` of `partition`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.shared.kafka_bootstrap_servers, group_id="studentperf-recorder"
    )
    await consumer.start()
    try:
        tp = TopicPartition(stack.topic, partition)

        async def past() -> int:
            committed = await consumer.committed(tp)
            return int(committed is not None and committed > offset)

        assert await eventually(past, 1, timeout=20) == 1
    finally:
        await consumer.stop()


async def test_a_far_future_event_is_dead_lettered_and_pins_nothing(
    stack: Stack, db: asyncpg.Pool
) -> None:
    now = int(time.time())
    await send(stack, db, event("future-1", now, age=15))
    future = event("future-1", now + 86_400, age=40, previous_gpa=4.0)  # a day ahead
    [(partition, offset)] = await produce(
        stack.shared.kafka_bootstrap_servers, stack.topic, [raw(future)]
    )
    await wait_committed(stack, offset, partition)
    letters = await dead_letters_of(stack, future.event_id)
    assert len(letters) == 1
    reason = letters[0][envelope.DEAD_LETTER_REASON_HEADER].decode()
    error = letters[0][envelope.DEAD_LETTER_ERROR_HEADER].decode()
    print(f"\n[far future] dead-lettered: {reason}: {error}")
    assert reason == "future-event" and "STUDENTPERF_MAX_FUTURE_SKEW_S" in error
    assert (
        await db.fetchval("SELECT count(*) FROM predictions WHERE prediction_id = $1",
                          uuid.UUID(future.event_id))
        == 0
    )  # fmt: skip
    assert dict(await db.fetchrow(FACTS, "future-1"))["age"] == 15

    # The next real event is not outranked by the refused one.
    await send(stack, db, event("future-1", now + 1, age=16))
    assert (await db.fetchrow(FACTS, "future-1"))["age"] == 16


def imported(student_id: str, seconds: int, line: int, score: float) -> ImportEvent:
    """A CSV row's event (female, master's parents, nothing else, no age), at `seconds`."""
    row = KaggleRow(line, student_id, "female", "master", None, None, score)
    when = datetime.fromtimestamp(seconds, UTC)
    return import_event(row, file_sha256="f" * 64, term="2026-spring", occurred_at=when)


async def send_import(stack: Stack, db: asyncpg.Pool, made: ImportEvent) -> int:
    """Produces one import event, waits until the recorder stored it; its offset."""
    record = envelope.encode_import(made)
    [(_, offset)] = await produce(
        stack.shared.kafka_bootstrap_servers,
        stack.topic,
        [Raw(record.key, record.value, record.headers)],
    )
    probe = count_rows(
        db, "SELECT count(*) FROM imported_rows WHERE event_id = $1", uuid.UUID(made.event_id)
    )
    assert await eventually(probe, 1, timeout=20) == 1
    return offset


async def test_an_import_merges_by_the_same_rule(stack: Stack, db: asyncpg.Pool) -> None:
    now = int(time.time())
    await send(stack, db, event("csv-1", now - 60, age=16, gender=2, previous_gpa=2.5))
    # A file with no age, imported after the event: newer; what it leaves out stays.
    offset = await send_import(stack, db, imported("csv-1", now - 30, line=2, score=64.0))
    facts = await db.fetchrow(
        "SELECT age, gender, parental_education, previous_gpa, gender_log_offset"
        " FROM students WHERE student_id = 'csv-1'"
    )
    print(f"\n[import after an event] {dict(facts)}")
    assert dict(facts) == {
        "age": 16,
        "gender": "female",
        "parental_education": "master",
        "previous_gpa": 2.5,
        "gender_log_offset": offset,
    }

    # An import older than what is stored (a file imported while the recorder was behind):
    # it fills what nothing newer gave, and replaces neither a newer fact nor a newer score.
    await send(stack, db, event("csv-2", now - 60, gender=2))
    outcome = make_outcome_event("csv-2", "2026-spring", 70.0, seconds=now - 50)
    await produce(stack.shared.kafka_bootstrap_servers, stack.topic, [raw_outcome(outcome)])
    probe = count_rows(db, "SELECT count(*) FROM outcomes WHERE student_id = 'csv-2'")
    assert await eventually(probe, 1) == 1
    await send_import(stack, db, imported("csv-2", now - 120, line=3, score=20.0))
    late = await db.fetchrow(
        "SELECT s.gender, s.parental_education, o.final_score, o.source"
        " FROM students s JOIN outcomes o USING (student_id) WHERE student_id = 'csv-2'"
    )
    print(f"[a late import] {dict(late)}")
    assert dict(late) == {
        "gender": "male",
        "parental_education": "master",
        "final_score": 70.0,
        "source": "rpc",
    }


async def test_the_migration_restores_erased_facts_from_the_history(
    postgres: PostgresServer,
) -> None:
    name = f"m{uuid.uuid4().hex[:12]}"
    await postgres.ensure_database(name)
    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        await migrate_before(conn, "0005")
        # What the old rule left: a sparse event (t2) erased the age given at t1, and the
        # record of t2 is the one that counts, whatever order they arrived in.
        await conn.execute(
            """
            INSERT INTO students (student_id, age, gender, profile_as_of)
                VALUES ('old-1', NULL, NULL, '2026-01-02');
            INSERT INTO model_versions (model_version) VALUES ('v');
            INSERT INTO student_profiles (student_profile_id, student_id, age, gender) VALUES
                ('00000000-0000-0000-0000-000000000001', 'old-1', 16, 'male'),
                ('00000000-0000-0000-0000-000000000002', 'old-1', NULL, NULL);
            INSERT INTO academic_records (academic_record_id, student_id, previous_gpa) VALUES
                ('00000000-0000-0000-0000-00000000000a', 'old-1', 2.0),
                ('00000000-0000-0000-0000-00000000000b', 'old-1', 3.0);
            INSERT INTO predictions (prediction_id, student_id, student_profile_id,
                academic_record_id, model_version, predicted_final_score, pass_probability,
                predicted_pass, pass_mark, predicted_at, event_schema_version) VALUES
                (gen_random_uuid(), 'old-1', '00000000-0000-0000-0000-000000000002',
                 '00000000-0000-0000-0000-00000000000b', 'v', 50, 0.5, true, 50,
                 '2026-01-02', 1),
                (gen_random_uuid(), 'old-1', '00000000-0000-0000-0000-000000000001',
                 '00000000-0000-0000-0000-00000000000a', 'v', 50, 0.5, true, 50,
                 '2026-01-01', 1);
            """
        )
        await conn.execute(dict(migration_files())["0005_student_facts"])
        facts = await conn.fetchrow(
            "SELECT age, gender, previous_gpa, age_as_of, previous_gpa_as_of, age_log_offset"
            " FROM students WHERE student_id = 'old-1'"
        )
        print(f"\n[migration] {dict(facts)}")
        assert (facts["age"], facts["gender"], facts["previous_gpa"]) == (16, "male", 3.0)
        assert facts["age_as_of"] == datetime(2026, 1, 1, tzinfo=UTC)
        assert facts["previous_gpa_as_of"] == datetime(2026, 1, 2, tzinfo=UTC)
        assert facts["age_log_offset"] == OUTSIDE_THE_LOG
    finally:
        await conn.close()


async def test_within_one_statement_each_fact_takes_its_latest_row(db: asyncpg.Pool) -> None:
    # One batch, rows in any order: per fact the latest (time, offset) that gave it wins.
    given = """(SELECT student_id, age, gender, NULL::text AS parental_education,
        NULL::text AS lunch_program, NULL::text AS test_preparation,
        NULL::float8 AS attendance_percentage, NULL::float8 AS study_hours_per_week,
        previous_gpa, assignments_completed, given_at, log_offset
      FROM (VALUES
        ('one-1', 15, NULL, NULL, NULL, '2026-03-01'::timestamptz, 3::bigint),
        ('one-1', 14, 'male', 2.0, true, '2026-03-01', 5),
        ('one-1', NULL, NULL, NULL, false, '2026-03-02', 1),
        ('one-1', NULL, 'female', 3.0, NULL, '2026-02-01', 9)
      ) AS v(student_id, age, gender, previous_gpa, assignments_completed, given_at, log_offset)
    ) AS given"""
    statement = merge_statement(given)
    await db.execute(statement)
    facts = await db.fetchrow(
        "SELECT age, age_log_offset, gender, previous_gpa, assignments_completed, profile_as_of"
        " FROM students WHERE student_id = 'one-1'"
    )
    print(f"\n[one statement] {dict(facts)}")
    assert dict(facts) == {
        "age": 14,  # same time as 15, later offset
        "age_log_offset": 5,
        "gender": "male",
        "previous_gpa": 2.0,
        "assignments_completed": False,  # the newest row gave only this
        "profile_as_of": datetime(2026, 3, 2, tzinfo=UTC),
    }
    # The same rows again: nothing is newer, no row version is written.
    assert await db.execute(statement) == "INSERT 0 0"
