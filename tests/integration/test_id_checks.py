"""The database's CHECKs on a student id and a trace id say the services' rules (migrations
0028-0029 rewrote them without a counted repetition, which cost PostgreSQL microseconds a row):
each accepts exactly what studentperf.student_id and studentperf.tracing accept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from infra.devstack import PostgresServer
from studentperf.student_id import student_id_is_valid
from studentperf.tracing import valid_trace_id
from tests.integration.conftest import migrated_database

STUDENT_IDS = [
    "a",
    "Z",
    "0",
    "-",
    "_",
    "bench-17_X",
    "a" * 64,
    "",
    "a" * 65,
    "é",
    "a b",
    "abc\n",
    "\nabc",
    "a.b",
    "ab$",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, not an ASCII one
    "\uff41",  # FULLWIDTH LATIN SMALL LETTER A
    "e\u0301",
    "[a]",
]

TRACE_IDS = [
    "0af7651916cd43dd8448eb211c80319c",
    "00000000000000000000000000000001",
    "00000000000000000000000000000000",
    "0AF7651916CD43DD8448EB211C80319C",
    "0af7651916cd43dd8448eb211c80319",
    "0af7651916cd43dd8448eb211c80319cd",
    "0af7651916cd43dd8448eb211c80319g",
    "0af7651916cd43dd8448eb211c80319\n",
    "0af7651916cd43dd8448eb211c8031\u0663c",
    "",
]


@pytest.fixture
async def conn(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres.dsn(await migrated_database(postgres, "checks")))
    try:
        yield connection
    finally:
        await connection.close()


async def _accepted(conn: asyncpg.Connection, constraint: str, sql: str, *args: object) -> bool:
    try:
        async with conn.transaction():
            await conn.execute(sql, *args)
    except asyncpg.CheckViolationError as refused:
        assert refused.constraint_name == constraint
        return False
    return True


async def test_the_student_id_check_is_the_student_id_rule(conn: asyncpg.Connection) -> None:
    accepted = {
        sid: await _accepted(
            conn,
            "students_student_id_check",
            "INSERT INTO students (student_id, profile_as_of) VALUES ($1, now())",
            sid,
        )
        for sid in STUDENT_IDS
    }
    assert accepted == {sid: student_id_is_valid(sid) for sid in STUDENT_IDS}
    assert sum(accepted.values()) == 7  # the list holds both kinds


async def test_the_trace_id_check_is_the_trace_id_rule(conn: asyncpg.Connection) -> None:
    profile, record = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO students (student_id, profile_as_of) VALUES ('s', now());"
        "INSERT INTO model_versions (model_version) VALUES ('v1')"
    )
    await conn.execute(
        "INSERT INTO student_profiles (student_profile_id, student_id) VALUES ($1, 's')", profile
    )
    await conn.execute(
        "INSERT INTO academic_records (academic_record_id, student_id) VALUES ($1, 's')", record
    )
    insert = """
        INSERT INTO predictions (prediction_id, student_id, student_profile_id,
            academic_record_id, model_version, predicted_final_score, pass_probability,
            predicted_pass, pass_mark, predicted_at, event_schema_version, trace_id)
        VALUES ($1, 's', $2, $3, 'v1', 70, 0.8, true, 50, now(), 1, $4)"""
    accepted = {
        trace: await _accepted(
            conn, "predictions_trace_id_check", insert, uuid.uuid4(), profile, record, trace
        )
        for trace in TRACE_IDS
    }
    assert accepted == {trace: valid_trace_id(trace) for trace in TRACE_IDS}
    assert sum(accepted.values()) == 2


async def test_the_rewritten_checks_are_validated(conn: asyncpg.Connection) -> None:
    """0029 validated what 0028 added NOT VALID: the rows before them were checked too."""
    validated = await conn.fetch(
        "SELECT conname, convalidated FROM pg_constraint"
        " WHERE conname IN ('students_student_id_check', 'predictions_trace_id_check')"
    )
    assert {r["conname"]: r["convalidated"] for r in validated} == {
        "students_student_id_check": True,
        "predictions_trace_id_check": True,
    }
