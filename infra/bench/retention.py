"""Removing a month of predictions two ways: the recorder's batched DELETEs by predicted_at
(recorder_service/retention.py), and a monthly partition detached and dropped whole.

    python -m infra.bench.retention [--rows N] [--rounds R]   (BENCH_QUICK=1: 100,000 rows)

Each run gets a fresh database with the project's migrations, then `--rows` predictions in one
old month plus a fifth as many recent ones, two predictions per profile and per academic
record (profiles repeat in practice), all loaded server-side. For partitions, the same rows go
into a table partitioned by month with the same indexes and foreign keys, and the figure is
the DETACH + DROP plus the anti-join that then finds the unreferenced profiles and records.
The two ways alternate, round after round, because the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from infra.devstack import PostgresServer, free_port
from recorder_service.store import remove_batch
from studentperf.migrate import apply_migrations
from studentperf.persistence import benchmarks

CUTOFF = datetime(2025, 2, 1, tzinfo=UTC)
BATCH = int(os.environ.get("STUDENTPERF_RETENTION_BATCH", "5000"))


async def fresh(server: PostgresServer, partitioned: bool, old: int) -> asyncpg.Connection:
    name = f"r{uuid.uuid4().hex[:10]}"
    await server.ensure_database(name)
    conn = await asyncpg.connect(server.dsn(name), command_timeout=3600)
    await apply_migrations(conn)
    table = "predictions"
    if partitioned:
        await conn.execute(benchmarks.PARTITIONED_PREDICTIONS)
        table = "predictions_by_month"
    total = old + old // 5
    sql = benchmarks.RETENTION_SEED.format(
        table=table, students=20_000, shared=total // 2, old=old, total=total
    )
    started = time.monotonic()
    await conn.execute(sql)
    print(f"  loaded {total:,} predictions in {time.monotonic() - started:.0f} s", flush=True)
    return conn


async def by_batches(conn: asyncpg.Connection) -> str:
    started, slowest, batches, removed = time.monotonic(), 0.0, 0, 0
    profiles = 0
    while True:
        begun = time.monotonic()
        done = await remove_batch(conn, CUTOFF, BATCH)
        slowest = max(slowest, time.monotonic() - begun)
        batches += 1
        removed += done.predictions
        profiles += done.student_profiles + done.academic_records
        if done.predictions < BATCH:
            break
    took = time.monotonic() - started
    left = await conn.fetchval(benchmarks.COUNT_PREDICTIONS)
    return (
        f"batched DELETE: {removed:,} predictions + {profiles:,} profiles/records in {took:.1f} s "
        f"({removed / took:,.0f}/s), {batches} batches of {BATCH}, slowest {slowest * 1000:.0f} ms;"
        f" {left:,} recent left"
    )


async def by_partition(conn: asyncpg.Connection) -> str:
    started = time.monotonic()
    async with conn.transaction():
        await conn.execute(benchmarks.DETACH_OLD_MONTH)
        await conn.execute(benchmarks.DROP_OLD_MONTH)
    dropped = time.monotonic() - started
    await conn.execute(benchmarks.PARTITION_ORPHANS)
    took = time.monotonic() - started
    left = await conn.fetchval(benchmarks.COUNT_PARTITIONED)
    return (
        f"partition: DETACH + DROP {dropped * 1000:.0f} ms, then the unreferenced profiles/records"
        f" {took - dropped:.1f} s (one statement each, all rows); total {took:.1f} s;"
        f" {left:,} recent left"
    )


async def run(rows: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="studentperf-retention-"))
    server = PostgresServer(work / "postgres", port=free_port())
    try:
        await server.start_and_wait(timeout=120)
        for round_ in range(rounds):
            order = (False, True) if round_ % 2 == 0 else (True, False)
            for partitioned in order:
                print(f"round {round_ + 1}, {'partition' if partitioned else 'batches'}:")
                conn = await fresh(server, partitioned, rows)
                try:
                    print("  " + await (by_partition(conn) if partitioned else by_batches(conn)))
                finally:
                    await conn.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    quick = bool(os.environ.get("BENCH_QUICK"))
    parser.add_argument("--rows", type=int, default=100_000 if quick else 1_000_000)
    parser.add_argument("--rounds", type=int, default=1 if quick else 2)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.rounds))


if __name__ == "__main__":
    main()
