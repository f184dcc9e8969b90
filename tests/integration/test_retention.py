"""Retention through the real recorder: backdated events are recorded, then `make retention`
(the one-shot) and the recorder's scheduled job remove the expired predictions with the
profiles, academic records and bare students only they used, and keep everything newer."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from infra.devstack import KafkaBroker
from recorder_service.settings import DEAD_LETTER_SUFFIX
from studentperf.config import DatabaseRole
from studentperf.outcomes import OutcomeRow
from studentperf.persistence.outcomes import store_outcomes
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import RecorderProcess, Stack
from tests.integration.helpers import count_rows, eventually, group_lag, run_module
from tests.integration.recorder_support import make_event, produce, raw

pytestmark = pytest.mark.usefixtures("dead_letter_topic")

DAY = 86_400
OLD = int(time.time()) - 400 * DAY  # well past a retention of 365 days
RECENT = int(time.time()) - 10 * DAY

COUNTS = """
SELECT (SELECT count(*) FROM predictions WHERE student_id = ANY($1)) AS predictions,
       (SELECT count(*) FROM student_profiles WHERE student_id = ANY($1)) AS profiles,
       (SELECT count(*) FROM academic_records WHERE student_id = ANY($1)) AS records,
       (SELECT count(*) FROM students WHERE student_id = ANY($1)) AS students
"""


@pytest.fixture(scope="module")
async def dead_letter_topic(stack: Stack, kafka: KafkaBroker) -> AsyncIterator[None]:
    await kafka.create_topic(stack.topic + DEAD_LETTER_SUFFIX, partitions=3)
    yield


async def record(stack: Stack, db: asyncpg.Pool, *events: PredictionEvent) -> None:
    """Produces the events and waits until the recorder has stored every one."""
    await produce(stack.shared.kafka_bootstrap_servers, stack.topic, [raw(e) for e in events])
    ids = [e.event_id for e in events]
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)", ids)
    assert await eventually(probe, len(ids), timeout=30) == len(ids)


async def counts(db: asyncpg.Pool, *students: str) -> dict[str, int]:
    return dict(await db.fetchrow(COUNTS, list(students)))


async def test_make_retention_removes_old_predictions_and_what_only_they_used(
    stack: Stack, db: asyncpg.Pool, recorder: RecorderProcess
) -> None:
    assert recorder.settings.retention_days == 0  # off by default: the recorder removes nothing
    old_only = [make_event("r-old", age=15, seconds=OLD + i) for i in range(3)]  # one profile
    graded = make_event("r-graded", seconds=OLD)
    # The same content old and recent: one profile and one record, shared, so they stay.
    shared_old = make_event("r-mixed", age=15, gpa=3.0, seconds=OLD)
    shared_new = make_event("r-mixed", age=15, gpa=3.0, seconds=RECENT)
    only_old = make_event("r-mixed", age=14, gpa=2.0, seconds=OLD + 1)
    fresh = make_event("r-new", seconds=RECENT)
    await record(stack, db, *old_only, graded, shared_old, shared_new, only_old, fresh)
    async with db.acquire() as conn:
        await store_outcomes(conn, [OutcomeRow("r-graded", "2025-fall", 70.0)], source="test")
    students = ("r-old", "r-graded", "r-mixed", "r-new")
    before = {s: await counts(db, s) for s in students}

    done = await run_module(
        "recorder_service.retention",
        "--days",
        "365",
        env={
            # The recorder's own role: the one-shot runs the recorder's code with its rights.
            "STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.RECORDER),
            "STUDENTPERF_RETENTION_BATCH": "2",  # several batches, as at scale
        },
    )
    assert done.returncode == 0, done.stderr
    after = {s: await counts(db, s) for s in students}
    print(f"before: {before}\nafter:  {after}")
    # 6 old predictions; profiles: r-old's, r-graded's, r-mixed's age-14 one; records likewise;
    # the student r-old, whom nothing refers to any more.
    for table, removed in (
        ("predictions", 6),
        ("student_profiles", 3),
        ("academic_records", 3),
        ("students", 1),
    ):
        assert f"{table:<17} {removed:>10,} removed" in done.stdout
    assert after["r-old"] == {"predictions": 0, "profiles": 0, "records": 0, "students": 0}
    # Its outcome keeps r-graded's current facts; its old inputs go.
    assert after["r-graded"] == {"predictions": 0, "profiles": 0, "records": 0, "students": 1}
    assert after["r-mixed"] == {"predictions": 1, "profiles": 1, "records": 1, "students": 1}
    assert after["r-new"] == before["r-new"]
    kept = await db.fetchval(
        "SELECT prediction_id::text FROM predictions WHERE student_id = 'r-mixed'"
    )
    assert kept == shared_new.event_id
    assert await db.fetchval("SELECT count(*) FROM outcomes WHERE student_id = 'r-graded'") == 1

    again = await run_module(
        "recorder_service.retention",
        "--days",
        "365",
        env={"STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.RECORDER)},
    )
    assert again.returncode == 0, again.stderr
    assert "predictions                0 removed" in again.stdout


async def test_make_retention_is_off_unless_given_days(stack: Stack) -> None:
    done = await run_module(
        "recorder_service.retention",
        env={"STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.RECORDER)},
        unset={"STUDENTPERF_RETENTION_DAYS"},
    )
    assert done.returncode == 0, done.stderr
    assert "retention is off" in done.stdout


async def test_the_recorder_removes_expired_predictions_on_its_schedule(
    stack: Stack, db: asyncpg.Pool, recorder: RecorderProcess
) -> None:
    await recorder.stop()
    recorder.start(retention_days=365, retention_interval_s=1, retention_batch=3)
    old = [make_event("s-old", age=12 + i, seconds=OLD + i) for i in range(5)]
    new = make_event("s-new", seconds=RECENT)
    bootstrap = stack.shared.kafka_bootstrap_servers
    await produce(bootstrap, stack.topic, [raw(e) for e in (*old, new)])

    # Offsets are committed after the rows: with nothing left to commit, all six were stored.
    async def lag() -> int:
        return await group_lag(bootstrap, recorder.settings.consumer_group, stack.topic)

    assert await eventually(lag, 0, timeout=30) == 0
    probe = count_rows(
        db, "SELECT count(*) FROM predictions WHERE student_id IN ('s-old', 's-new')"
    )
    left = await eventually(probe, 1, timeout=30)  # the job runs every second
    after = await counts(db, "s-old", "s-new")
    print(f"\n[scheduled] 5 old + 1 recent recorded; left: {after}")
    assert left == 1
    assert after == {"predictions": 1, "profiles": 1, "records": 1, "students": 1}
    assert (
        await db.fetchval("SELECT prediction_id::text FROM predictions WHERE student_id = 's-new'")
        == new.event_id
    )


async def test_make_retention_without_its_database_says_so_without_a_traceback() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    done = await run_module(
        "recorder_service.retention",
        "--days",
        "365",
        env={"STUDENTPERF_DATABASE_URL": f"postgresql://studentperf_recorder@127.0.0.1:{port}/x"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "retention stopped early" in done.stderr
    assert "Traceback" not in done.stderr
