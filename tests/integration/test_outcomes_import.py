"""The Kaggle exam CSV import through Kafka: each good row an event the recorder writes, each bad
row reported; the same file twice stores nothing new; a stopped recorder delays, loses nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from infra.devstack import KafkaBroker, free_port
from recorder_service.settings import DEAD_LETTER_SUFFIX
from studentperf import envelope
from studentperf.config import DatabaseRole
from tests.integration.conftest import RecorderProcess, Stack
from tests.integration.helpers import count_rows, eventually, group_lag, read_all, run_module
from tests.kaggle_csv import kaggle_rows, write
from trainer import kaggle
from trainer.import_csv import import_file, import_rows
from trainer.import_publisher import PublishFailed
from trainer.import_wait import WaitGaveUp

# The dead-letter topic before the recorder: the broker creates no topic by itself.
pytestmark = pytest.mark.usefixtures("dead_letter_topic", "recorder")

BAD_ROWS = [
    ["female", "group B", "doctor", "standard", "none", "70", "70", "70"],
    ["male", "group A", "high school", "standard", "none", "-3", "20", "20"],
]
GROUP = "studentperf-recorder"  # the recorder fixture's consumer group

# Everything the recorder stores of a file's students, to compare before and after.
SNAPSHOT = """
SELECT s.*, o.term, o.final_score, o.source, o.recorded_at, o.updated_at, o.recorded_as_of,
       o.log_offset AS outcome_log_offset
FROM students s JOIN outcomes o USING (student_id)
WHERE s.student_id LIKE $1 ORDER BY s.student_id, o.term
"""
# The import events noted as stored (ids only: no row there names a student), and when.
NOTED = "SELECT event_id, recorded_at FROM imported_rows WHERE event_id = ANY($1::uuid[])"


@pytest.fixture(scope="module")
async def dead_letter_topic(stack: Stack, kafka: KafkaBroker) -> AsyncIterator[None]:
    await kafka.create_topic(stack.topic + DEAD_LETTER_SUFFIX, partitions=3)
    yield


def prefix(found: kaggle.KaggleFile) -> str:
    return f"csv-{found.sha256[:12]}-%"


async def events_in_topic(stack: Stack, ids: tuple[str, ...]) -> Counter[str]:
    """How many import events of each of `ids` the topic holds."""
    wanted = set(ids)
    found: Counter[str] = Counter()
    for record in await read_all(stack.shared.kafka_bootstrap_servers, stack.topic):
        headers = [(k, v) for k, v in record.headers]
        if envelope.is_import(headers):
            event = envelope.decode_import(record.value, headers)
            if event.event_id in wanted:
                found[event.event_id] += 1
    return found


async def test_an_import_reaches_the_database_through_the_recorder_and_twice_stores_nothing_new(
    tmp_path: Path, stack: Stack, db: asyncpg.Pool
) -> None:
    csv = write(tmp_path / "exams.csv", [*kaggle_rows(30, seed=3), *BAD_ROWS])
    importer = stack.shared_as(DatabaseRole.IMPORTER)
    report = await import_file(csv, shared=importer, term="2024-spring")
    assert (report.published, report.stored) == (30, 30)
    assert [e.line for e in report.file.errors] == [32, 33]
    stored = await db.fetch(
        "SELECT o.student_id, o.final_score, o.source, s.gender, s.lunch_program, s.age"
        " FROM outcomes o JOIN students s USING (student_id)"
        " WHERE o.student_id LIKE $1 ORDER BY o.student_id",
        prefix(report.file),
    )
    assert len(stored) == 30
    first = report.file.rows[0]
    assert tuple(stored[0]) == (
        first.student_id,
        first.final_score,
        f"csv:{report.file.sha256}",
        first.gender,
        first.lunch_program,
        None,
    )
    before = [dict(r) for r in await db.fetch(SNAPSHOT, prefix(report.file))]
    noted_before = sorted(tuple(r) for r in await db.fetch(NOTED, report.event_ids))
    assert len(before) == 30

    # The same file again: the same event ids, published again and skipped by the recorder.
    again = await import_file(csv, shared=importer, term="2024-spring")
    assert again.event_ids == report.event_ids and (again.published, again.stored) == (30, 30)
    lag = lambda: group_lag(stack.shared.kafka_bootstrap_servers, GROUP, stack.topic)  # noqa: E731
    assert await eventually(lag, 0, timeout=60) == 0  # the recorder has read both imports
    after = [dict(r) for r in await db.fetch(SNAPSHOT, prefix(report.file))]
    in_topic = await events_in_topic(stack, report.event_ids)
    noted = sorted(tuple(r) for r in await db.fetch(NOTED, report.event_ids))
    imported = len(noted)
    print(
        f"\n[import twice] rows read {len(report.file.rows) + len(report.file.errors)},"
        f" bad {len(report.file.errors)}, published {report.published} + {again.published},"
        f" events per id in the topic {sorted(set(in_topic.values()))},"
        f" rows stored {len(after)}, imported_rows {imported}, rows changed by the second"
        f" import {sum(a != b for a, b in zip(before, after, strict=True))}"
    )
    assert set(in_topic.values()) == {2} and len(in_topic) == 30
    assert after == before and imported == 30 and noted == noted_before


async def test_import_command_prints_each_bad_row_and_the_counts(
    tmp_path: Path, stack: Stack
) -> None:
    csv = write(tmp_path / "exams.csv", [*kaggle_rows(5, seed=4), *BAD_ROWS])
    env = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": stack.shared.kafka_bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": stack.topic,
        "STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.IMPORTER),
    }
    done = await run_module("trainer.import_csv", str(csv), "--term", "2024-fall", env=env)
    assert done.returncode == 3, done.stderr
    assert f"{csv}:7: parental level of education: unknown value 'doctor'" in done.stderr
    assert f"{csv}:8: math score: '-3' is not a number from 0 to 100" in done.stderr
    assert (
        "7 rows read, 2 bad rows skipped, 5 events published, 5 stored by the recorder"
        in done.stdout
    )
    assert "stored by the recorder 5 of 5 rows" in done.stdout  # the wait's progress


async def test_with_the_recorder_stopped_the_import_succeeds_and_the_rows_come_later(
    tmp_path: Path, stack: Stack, db: asyncpg.Pool, recorder: RecorderProcess
) -> None:
    csv = write(tmp_path / "exams.csv", kaggle_rows(40, seed=5))
    importer = stack.shared_as(DatabaseRole.IMPORTER)
    await recorder.stop()
    try:
        report = await import_file(csv, shared=importer, term="2025-fall", wait=False)
        assert (report.published, report.stored) == (40, None)
        # Waiting for a stopped recorder gives up once nothing arrived for the stall timeout.
        with pytest.raises(WaitGaveUp) as gave_up:
            await import_file(csv, shared=importer, term="2025-fall", stall_timeout_s=1)
        in_topic = await events_in_topic(stack, report.event_ids)
        stored_meanwhile = await db.fetchval(
            "SELECT count(*) FROM outcomes WHERE student_id LIKE $1", prefix(report.file)
        )
    finally:
        recorder.start()
    probe = count_rows(
        db, "SELECT count(*) FROM imported_rows WHERE event_id = ANY($1::uuid[])", report.event_ids
    )
    stored = await eventually(probe, 40, timeout=60)
    print(
        f"\n[recorder stopped] published {report.published}, in the topic"
        f" {sum(in_topic.values())} ({len(in_topic)} ids), stored while stopped"
        f" {stored_meanwhile}, the wait gave up at {gave_up.value.stored} of"
        f" {gave_up.value.total}, stored once it ran {stored}"
    )
    assert len(in_topic) == 40 and stored_meanwhile == 0
    assert (gave_up.value.stored, gave_up.value.total) == (0, 40)
    assert stored == 40
    assert (
        await db.fetchval(
            "SELECT count(*) FROM outcomes WHERE student_id LIKE $1 AND source = $2",
            prefix(report.file),
            f"csv:{report.file.sha256}",
        )
        == 40
    )


async def test_without_a_broker_the_import_fails_and_says_how_far_it_got(
    tmp_path: Path, stack: Stack
) -> None:
    csv = write(tmp_path / "exams.csv", kaggle_rows(3, seed=6))
    nowhere = replace(
        stack.shared_as(DatabaseRole.IMPORTER), kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"
    )
    with pytest.raises(PublishFailed) as failed:
        await import_rows(kaggle.read(csv), shared=nowhere, term="2025-fall", publish_timeout_s=5)
    print(f"\n[no broker] {failed.value}")
    assert "acknowledged 0 of 3 events" in str(failed.value)
