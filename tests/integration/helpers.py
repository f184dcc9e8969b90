"""Small helpers the integration tests share: waiting for rows, counting a topic's records."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from studentperf.migrate import migration_files
from studentperf.model_artifact import save_artifact
from studentperf.persistence.schema import CREATE_MIGRATIONS_TABLE, NOTE_APPLIED
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile
from trainer import synthetic
from trainer.fit import fit_and_evaluate
from trainer.pipeline import logistic, ridge

REPO = Path(__file__).resolve().parents[2]


async def eventually(
    probe: Callable[[], Awaitable[int]], expected: int, timeout: float = 20.0
) -> int:
    """Polls `probe` until it returns `expected` (or the time is up); returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


BLOCKED_BY = "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
# Run by the owner of a test's own database: lets a stored version's files be changed, which
# migration 0021 refuses to everyone, so that a test can forge one (a deliberate DDL step).
ALLOW_CHANGES = (
    "ALTER TABLE model_artifact_files DISABLE TRIGGER model_artifact_files_no_update_or_delete"
)


async def blocked_by(db: asyncpg.Pool, blocker: asyncpg.Connection, expected: int = 1) -> int:
    """Waits until `expected` sessions wait on a lock `blocker` holds; returns how many do."""
    return await eventually(count_rows(db, BLOCKED_BY, blocker.get_server_pid()), expected)


def count_rows(db: asyncpg.Pool, sql: str, *args: object) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return int(await db.fetchval(sql, *args))

    return probe


async def topic_size(bootstrap_servers: str, topic: str) -> int:
    """How many records the topic holds: the sum of its partitions' end offsets."""
    # Subscribed (without a group), the consumer fetches the topic's metadata as it starts.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"no metadata for topic {topic}"
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


def student(student_id: str, **academic: float | bool) -> Student:
    return Student(
        profile=StudentProfile(student_id=student_id, age=16),
        academic_record=AcademicRecord(**academic),  # type: ignore[arg-type]
    )


async def committed_offsets(bootstrap_servers: str, group: str) -> dict[TopicPartition, int]:
    """What consumer group `group` has committed, per partition of any topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in committed.items()}


async def group_lag(bootstrap_servers: str, group: str, topic: str) -> int:
    """Records of `topic` that consumer group `group` has not committed yet."""
    committed = await committed_offsets(bootstrap_servers, group)
    done = sum(offset for tp, offset in committed.items() if tp.topic == topic)
    return await topic_size(bootstrap_servers, topic) - int(done)


async def read_all(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record the topic holds right now."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        found: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + 120  # the fault tests' topics hold tens of thousands
        while True:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                return found
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += records
    finally:
        await consumer.stop()


def train_version(models: Path, seed: int, second: int) -> str:
    """A small model version in `models`, not made current; returns its name."""
    fitted = fit_and_evaluate(
        synthetic.generate(400, seed),
        pass_mark=50.0,
        seed=seed,
        score_options=[ridge(1.0)],
        pass_options=[logistic(1.0)],
    )
    when = datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
    path = save_artifact(
        models, fitted.model, fingerprint=f"{seed:08x}", details={}, created_at=when,
        make_current=False,
    )  # fmt: skip
    return path.name


async def backends_of(owner_dsn: str, role: str) -> list[int]:
    """The server processes of `role`'s connections to the owner's database (to stop one with
    SIGSTOP: a database that keeps its connections open and answers nothing)."""
    owner = await asyncpg.connect(owner_dsn)
    try:
        rows = await owner.fetch(
            "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = current_database()",
            role,
        )
    finally:
        await owner.close()
    return [row["pid"] for row in rows]


# One student's profile and academic record, for tests that insert predictions by hand: the
# ids 00000000-0000-4000-8000-000000000001 (profile) and ...0002 (record) of student 's'.
ONE_STUDENTS_PARENTS = """
INSERT INTO students (student_id, profile_as_of) VALUES ('s', now());
INSERT INTO student_profiles (student_profile_id, student_id, age)
    VALUES ('00000000-0000-4000-8000-000000000001', 's', 15);
INSERT INTO academic_records (academic_record_id, student_id, previous_gpa)
    VALUES ('00000000-0000-4000-8000-000000000002', 's', 3);
"""


async def run_module(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    unset: Collection[str] = (),
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """`python -m module args` from the repository, as `make` runs it, off the event loop the
    test's servers share: this process's environment less `unset`, plus `env`. It prints the
    command's output, so a failing test shows it."""
    base = {k: v for k, v in os.environ.items() if k not in unset}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", module, *args],
        env=base | dict(env or {}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(f"\n$ python -m {module} {' '.join(args)} -> {done.returncode}")
    print(done.stdout + done.stderr)
    return done


async def migrate_before(conn: asyncpg.Connection, version: str) -> None:
    """Lays the schema out as studentperf.migrate would have before `version`: every earlier
    migration applied and noted as applied (0004's grants name schema_migrations), so a test
    can write what an old schema held and then migrate on."""
    await conn.execute(CREATE_MIGRATIONS_TABLE)
    for earlier, sql in migration_files():
        if earlier >= version:
            break
        await conn.execute(sql)
        await conn.execute(NOTE_APPLIED, earlier)
