"""Erasing a student with 10,000 predictions, as the recorder applies an ErasureEvent.

    python -m infra.bench.erasure [--rows N] [--students S]   (BENCH_QUICK=1: 50,000 rows)

A PostgreSQL of its own gets the project's migrations, then `--rows` predictions of other
students (1,000 each) and `--students` students with 10,000 predictions each (100 distinct
academic records, 4 outcomes), loaded server-side. Each of those is erased by the recorder's
own code (recorder_service/erasure.py: one transaction under the erasure role, connected as the
recorder), timed from the first statement to the commit. Then the per-batch lookup the recorder
makes for every batch: 2,000 students looked up among the audit rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from infra.devstack import PostgresServer, free_port
from recorder_service.erasure import Erasure, StudentHasher, apply_erasures, erased_as_of
from recorder_service.settings import DEV_ERASURE_KEY
from studentperf.config import DatabaseRole
from studentperf.migrate import apply_migrations
from studentperf.persistence import benchmarks

PER_STUDENT = 10_000
OTHERS_PER_STUDENT = 1_000
BATCH_STUDENTS = 2_000


async def load(postgres: PostgresServer, rows: int, heavy: int) -> str:
    """A migrated, loaded database; the predictions table's size."""
    await postgres.ensure_database("erasure")
    conn = await asyncpg.connect(postgres.dsn("erasure"), command_timeout=7200)
    try:
        await apply_migrations(conn)
        students = heavy + max(1, rows // OTHERS_PER_STUDENT)
        sql = benchmarks.ERASURE_SEED.format(
            students=students,
            rows=rows,
            heavy=heavy,
            heavy_rows=heavy * PER_STUDENT,
            per_student=PER_STUDENT,
            others_per_student=OTHERS_PER_STUDENT,
        )
        for statement in sql.split(";\n"):
            if statement.strip():
                await conn.execute(statement)
        return str(await conn.fetchval(benchmarks.PREDICTIONS_SIZE))
    finally:
        await conn.close()


async def run(rows: int, heavy: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="studentperf-bench-erasure-"))
    postgres = PostgresServer(work / "postgres", port=free_port())
    try:
        await postgres.start_and_wait(timeout=120)
        started = time.monotonic()
        size = await load(postgres, rows, heavy)
        print(f"[erasure] loaded {size} in {time.monotonic() - started:.0f} s", flush=True)
        conn = await asyncpg.connect(postgres.dsn("erasure", user=DatabaseRole.RECORDER))
        try:
            timings: list[float] = []
            removed: dict[str, int] = {}
            for number in range(heavy):
                erasure = Erasure(
                    str(uuid.uuid4()), f"s{number}", datetime.now(UTC), "bench", "bench"
                )
                started = time.perf_counter()
                [applied] = await apply_erasures(conn, [erasure], DEV_ERASURE_KEY)
                timings.append((time.perf_counter() - started) * 1000)
                removed = dict(applied.removed)
                assert removed.get("predictions") == PER_STUDENT, removed
            batch = [f"s{n}" for n in range(BATCH_STUDENTS)]
            lookups: list[float] = []
            for _ in range(20):
                started = time.perf_counter()
                await erased_as_of(conn, batch, StudentHasher(DEV_ERASURE_KEY))
                lookups.append((time.perf_counter() - started) * 1000)
        finally:
            await conn.close()
        print(
            f"\nErasing a student with {PER_STUDENT:,} predictions, predictions table {size}:\n"
            f"  {heavy} students, one transaction each: median {statistics.median(timings):.0f} ms,"
            f" max {max(timings):.0f} ms (target < 1 s); removed per student {removed}\n"
            f"  the recorder's per-batch lookup of {BATCH_STUDENTS:,} students among {heavy}"
            f" erasures: median {statistics.median(lookups):.1f} ms; load average"
            f" {os.getloadavg()[0]:.1f}"
        )
    finally:
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    quick = bool(os.environ.get("BENCH_QUICK"))
    parser = argparse.ArgumentParser(prog="python -m infra.bench.erasure", description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000 if quick else 1_000_000)
    parser.add_argument("--students", type=int, default=2 if quick else 5)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.students))


if __name__ == "__main__":
    main()
