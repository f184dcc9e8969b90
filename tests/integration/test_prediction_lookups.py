"""The lookups of predictions by one id stay index lookups (migration 0032 made their indexes
hash indexes): a trace's row (README, "Tracing"), and retention's question whether a profile
or an academic record is still used. Without an index each would read the whole table, once
per trace asked, once per profile or record a retention batch removes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from infra.devstack import PostgresServer
from studentperf.persistence import benchmarks, retention
from tests.integration.conftest import migrated_database

# 20,000 predictions of 1,000 students, two per profile and per record, each with a trace id.
SEED = benchmarks.RETENTION_SEED.format(
    table="predictions", students=1_000, shared=10_000, old=10_000, total=20_000
)
TRACES = "UPDATE predictions SET trace_id = md5(prediction_id::text); ANALYZE predictions"


@pytest.fixture(scope="module")
async def conn(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    database = await migrated_database(postgres, "lookups")
    connection = await asyncpg.connect(postgres.dsn(database))
    try:
        await connection.execute(SEED)
        await connection.execute(TRACES)
        yield connection
    finally:
        await connection.close()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def scans_of_predictions(conn: asyncpg.Connection, query: str, *args: object) -> set[str]:
    """How the plan reads predictions: the index of each index scan, or "Seq Scan"."""
    [explained] = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args))
    return {
        node.get("Index Name", node["Node Type"])
        for node in nodes(explained["Plan"])
        if node.get("Relation Name") == "predictions"
    }


async def test_a_trace_is_found_by_its_index(conn: asyncpg.Connection) -> None:
    trace = await conn.fetchval("SELECT trace_id FROM predictions LIMIT 1")
    query = "SELECT prediction_id FROM predictions WHERE trace_id = $1"
    assert await scans_of_predictions(conn, query, trace) == {"predictions_trace_id_hash_idx"}
    assert len(await conn.fetch(query, trace)) == 1


@pytest.mark.parametrize(
    ("statement", "table", "key", "index"),
    [
        (retention.REMOVE_PROFILES, "student_profiles", "student_profile_id",
         "predictions_student_profile_id_hash_idx"),
        (retention.REMOVE_RECORDS, "academic_records", "academic_record_id",
         "predictions_academic_record_id_hash_idx"),
    ],
)  # fmt: skip
async def test_retention_asks_by_index_whether_a_profile_or_record_is_used(
    conn: asyncpg.Connection, statement: str, table: str, key: str, index: str
) -> None:
    ids = [r[0] for r in await conn.fetch(f"SELECT {key} FROM {table} LIMIT 100")]
    assert await scans_of_predictions(conn, statement, ids) == {index}
