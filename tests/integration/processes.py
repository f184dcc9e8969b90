"""Real service processes and a load generator, for the fault tests.

The inference service and the recorder run as `python -m ...` children, configured by
environment variables exactly as in production, so SIGKILL and SIGTERM hit real processes.
The load generator runs in the test's event loop and keeps the ids of every acknowledged
prediction, so a test can count what was promised against what was stored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """One service as a child process; its output goes to a log file for post-mortems."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.module} did not exit within {timeout} s")
            await asyncio.sleep(0.05)
        return self.process.returncode

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                await self.wait(30)
            except TimeoutError:
                await self.kill()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Load:
    """What a load run sent and what it was told."""

    sent: int = 0
    acknowledged: set[uuid.UUID] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    failure_details: set[str] = field(default_factory=set)
    slowest_s: float = 0.0


async def drive_load(
    address: str,
    stop: asyncio.Event,
    *,
    workers: int = 8,
    batch: int = 5,
    prefix: str = "load",
    call_timeout_s: float = 15.0,
) -> Load:
    """Calls BatchPredict (and Predict for batch=1) from `workers` loops until `stop` is set."""
    load = Load()

    async def worker(number: int, stub: api_grpc.PredictionServiceStub) -> None:
        sequence = 0
        while not stop.is_set():
            students = [
                Student(
                    profile=StudentProfile(student_id=f"{prefix}-{number}-{sequence + i}", age=16),
                    academic_record=AcademicRecord(previous_gpa=(sequence + i) % 40 / 10),
                )
                for i in range(batch)
            ]
            sequence += batch
            load.sent += batch
            started = time.monotonic()
            try:
                if batch == 1:
                    reply = await stub.Predict(
                        api.PredictRequest(student=students[0]), timeout=call_timeout_s
                    )
                    ids = [reply.prediction.prediction_id]
                else:
                    answer = await stub.BatchPredict(
                        api.BatchPredictRequest(students=students), timeout=call_timeout_s
                    )
                    ids = [r.prediction.prediction_id for r in answer.results]
                load.acknowledged.update(uuid.UUID(i) for i in ids)
            except grpc.aio.AioRpcError as error:
                load.failures[error.code().name] += batch
                load.failure_details.add(f"{error.code().name}: {error.details()}")
                await asyncio.sleep(0.05)  # a refused call is not retried in a tight loop
            load.slowest_s = max(load.slowest_s, time.monotonic() - started)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        await asyncio.gather(*(worker(n, stub) for n in range(workers)))
    return load


@dataclass
class Tally:
    sent: int
    acknowledged: int
    stored: int
    duplicates: int
    lost: int

    def line(self, name: str) -> str:
        return (
            f"{name}: sent {self.sent} / acknowledged {self.acknowledged} / stored {self.stored}"
            f" / duplicates {self.duplicates} / lost {self.lost}"
        )


async def tally(db_url: str, load: Load, *, stall_timeout_s: float = 60.0) -> Tally:
    """Waits until every acknowledged prediction is stored, or until no new row has come for
    `stall_timeout_s` (a loaded machine makes the recorder slow, not stuck), then counts."""
    ids = list(load.acknowledged)
    conn = await asyncpg.connect(db_url)
    try:
        stored = distinct = -1
        last_progress = time.monotonic()
        while True:
            # One statement, so the two counts are of the same rows.
            row = await conn.fetchrow(
                "SELECT count(*) AS stored, count(DISTINCT prediction_id) AS distinct_ids"
                " FROM predictions WHERE prediction_id = ANY($1)",
                ids,
            )
            if row["stored"] != stored:
                last_progress = time.monotonic()
            stored, distinct = row["stored"], row["distinct_ids"]
            if stored == len(ids) or time.monotonic() - last_progress > stall_timeout_s:
                break
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    return Tally(
        sent=load.sent,
        acknowledged=len(ids),
        stored=int(stored),
        duplicates=int(stored) - int(distinct),
        lost=len(ids) - int(distinct),
    )
