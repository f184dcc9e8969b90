"""ListStudentPredictions latency for a student with 1,000 predictions in a large table.

    python -m infra.bench.history [--rows N] [--calls C]   (BENCH_QUICK=1: 200,000 rows)

A PostgreSQL of its own gets the project's migrations, then `--rows` predictions (5,000,000 by
default) loaded server-side: 1,000 per student, a third with a stored explanation, each
student with an outcome for the predictions' term. The inference service runs in this process
(no Kafka: history never touches it) and reads as the analyst role, as deployed. Each call asks
for one page of 50 (the default) of one of 50 students, at a random point of its history (a
token from an earlier walk), so pages near the end count as much as the first; the figures are
per call, client to server and back over gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc

from inference_service.server import start_server
from inference_service.settings import Settings
from infra.bench.peers import train_model
from infra.devstack import PostgresServer, free_port
from studentperf.config import DatabaseRole, SharedSettings
from studentperf.migrate import apply_migrations
from studentperf.persistence import benchmarks
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc

PER_STUDENT = 1000
WALKED = 50  # students whose pages are asked for, at random


def _explanation() -> bytes:
    explanation = api.ScoreExplanation(base_score=60, other_factors=1.5, raw_score=64.0)
    for name in ("academic_record.previous_gpa", "academic_record.attendance_percentage"):
        explanation.top_factors.add(feature=name, contribution=1.25)
    return explanation.SerializeToString()


async def load(postgres: PostgresServer, rows: int) -> tuple[str, str]:
    """A migrated, loaded database; its analyst DSN and the predictions table's size."""
    await postgres.ensure_database("history")
    conn = await asyncpg.connect(postgres.dsn("history"), command_timeout=7200)
    try:
        await apply_migrations(conn)
        students = max(1, rows // PER_STUDENT)
        for statement in benchmarks.HISTORY_SEED.format(students=students, rows=rows).split(";\n"):
            if statement.strip():
                args = [_explanation()] if "$1" in statement else []
                await conn.execute(statement, *args)
        size = await conn.fetchval(benchmarks.PREDICTIONS_SIZE)
    finally:
        await conn.close()
    dsn = postgres.dsn("history")
    return dsn.replace(f"//{DatabaseRole.OWNER}@", f"//{DatabaseRole.ANALYST}@", 1), str(size)


async def measure(port: int, calls: int, students: int) -> list[float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        # A walk through some students' pages gives tokens for every point of their histories
        # (a token is bound to its student).
        choice = random.Random(7)
        starts: list[tuple[str, str]] = []
        for number in choice.sample(range(students), min(students, WALKED)):
            request = api.ListStudentPredictionsRequest(student_id=f"s{number}")
            while True:
                starts.append((request.student_id, request.page_token))
                page = await stub.ListStudentPredictions(request, timeout=30)
                if not page.next_page_token:
                    break
                request.page_token = page.next_page_token
        print(f"[history] {len(starts)} pages of 50 walked, of {WALKED} students", flush=True)
        for _ in range(20):  # warm-up: the pool's connection, prepared statements
            await stub.ListStudentPredictions(
                api.ListStudentPredictionsRequest(student_id="s0"), timeout=30
            )
        timings: list[float] = []
        for _ in range(calls):
            sid, token = choice.choice(starts)
            request = api.ListStudentPredictionsRequest(student_id=sid, page_token=token)
            started = time.perf_counter()
            page = await stub.ListStudentPredictions(request, timeout=30)
            timings.append((time.perf_counter() - started) * 1000)
            assert page.predictions, "an empty page: the load went wrong"
        return timings


async def run(rows: int, calls: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="studentperf-bench-history-"))
    postgres = PostgresServer(work / "postgres", port=free_port())
    try:
        await postgres.start_and_wait(timeout=120)
        print("[history] training a small model", flush=True)
        await asyncio.to_thread(train_model, work / "models")
        started = time.monotonic()
        dsn, size = await load(postgres, rows)
        print(f"[history] loaded {size} in {time.monotonic() - started:.0f} s", flush=True)
        settings = Settings(
            # Nothing is predicted: the broker is never reached.
            shared=SharedSettings(kafka_bootstrap_servers="127.0.0.1:1", database_url=dsn),
            listen_address="127.0.0.1:0",
            models_dir=str(work / "models"),
            spool_dir=str(work / "spool"),
            model_poll_interval_s=0,
            history_database_url=dsn,
        )
        running = await start_server(settings)
        try:
            timings = await measure(running.port, calls, max(1, rows // PER_STUDENT))
        finally:
            await running.stop(grace_s=1)
        cuts = statistics.quantiles(timings, n=100)
        print(
            f"\nListStudentPredictions, a page of 50 of a student's {PER_STUDENT:,} predictions,"
            f" predictions table {size}:\n"
            f"  {len(timings)} calls, one at a time: p50 {cuts[49]:.2f} ms, p99 {cuts[98]:.2f} ms,"
            f" max {max(timings):.2f} ms (target p99 < 20 ms), load average"
            f" {os.getloadavg()[0]:.1f}"
        )
    finally:
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    quick = bool(os.environ.get("BENCH_QUICK"))
    parser = argparse.ArgumentParser(prog="python -m infra.bench.history", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000 if quick else 5_000_000)
    parser.add_argument("--calls", type=int, default=300 if quick else 2000)
    args = parser.parse_args()
    # The service's publisher retries the absent broker in the background; nothing waits on it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("studentperf.retry").setLevel(logging.ERROR)
    asyncio.run(run(args.rows, args.calls))


if __name__ == "__main__":
    main()
