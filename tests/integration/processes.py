"""Real service processes and a load generator, for the fault tests.

The inference service and the recorder run as `python -m ...` children, configured by
environment variables exactly as in production, so SIGKILL and SIGTERM hit real processes.
The load generator runs in the test's event loop and keeps the ids of every acknowledged
prediction, the students of every call that failed and when each call ran, so a test can count
what was promised against what the topic and the database hold (`tally`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from infra.processes import ChildProcess
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile
from tests.integration.duplicates import duplicate_child_rows, read_prediction_events

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess(ChildProcess):
    """`python -m module` with `env` on top of this process's environment, its output in
    `log_path` for post-mortems."""

    log_path: Path
    env: dict[str, str]

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        super().__init__(
            [sys.executable, "-m", module], env={**os.environ, **env}, log_path=log_path
        )
        self.module = module


@dataclass(frozen=True)
class Call:
    """One call as its client saw it: when it was sent and ended (monotonic), and its status."""

    started: float
    ended: float
    code: str  # "OK" or the gRPC status code's name
    students: tuple[str, ...]


@dataclass
class Load:
    """What a load run sent and what it was told."""

    prefix: str = "load"  # every student id it sends starts with `<prefix>-`
    sent: int = 0
    acknowledged: set[uuid.UUID] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    failure_details: set[str] = field(default_factory=set)
    # The students of the calls that failed: a call may fail after its events were published
    # (a deadline, a process killed before it answered), so their predictions may be stored.
    failed_students: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    slowest_s: float = 0.0


async def drive_load(
    address: str,
    stop: asyncio.Event,
    *,
    workers: int = 8,
    batch: int = 5,
    prefix: str = "load",
    call_timeout_s: float = 15.0,
    connections: int = 1,
) -> Load:
    """Calls BatchPredict (and Predict for batch=1) from `workers` loops until `stop` is set,
    over `connections` TCP connections (loop n on connection n % connections)."""
    load = Load(prefix)

    async def worker(number: int, stub: api_grpc.PredictionServiceAsyncStub) -> None:
        sequence = 0
        while not stop.is_set():
            students = [
                Student(
                    profile=StudentProfile(student_id=f"{prefix}-{number}-{sequence + i}", age=16),
                    academic_record=AcademicRecord(previous_gpa=(sequence + i) % 40 / 10),
                )
                for i in range(batch)
            ]
            names = tuple(s.profile.student_id for s in students)
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
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
                load.failures[code] += batch
                load.failure_details.add(f"{code}: {error.details()}")
                load.failed_students.update(names)
            ended = time.monotonic()
            load.calls.append(Call(started, ended, code, names))
            load.slowest_s = max(load.slowest_s, ended - started)
            if code != "OK":
                await asyncio.sleep(0.05)  # a refused call is not retried in a tight loop

    # A channel of its own subchannel pool: channels of the same target and options would
    # otherwise share one connection.
    options = [("grpc.use_local_subchannel_pool", 1)] if connections > 1 else []
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(connections)]
    try:
        stubs = [api_grpc.PredictionServiceStub(c) for c in channels]
        await asyncio.gather(*(worker(n, stubs[n % connections]) for n in range(workers)))
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return load


@dataclass
class Tally:
    """What a load run was promised against what the topic and the database hold."""

    sent: int
    acknowledged: int
    spooled: int
    stored: int  # rows of the load's predictions, acknowledged or not
    lost: int  # acknowledged predictions without a row
    duplicate_rows: int  # child rows repeating one of the same student (duplicates.py)
    duplicate_events: int  # events of the load in the topic beyond one per prediction id
    # Stored but never acknowledged, of a call the client saw fail, with an event in the topic:
    # the call failed after publishing (allowed: README, "Not promised").
    failed_after_publishing: list[str]
    # Stored but never acknowledged and not so explained: a prediction recorded twice under
    # another id, or a row from nowhere.
    unexplained: list[str]
    unrecorded_events: int  # prediction ids of the load in the topic without a row

    def line(self, name: str) -> str:
        extra = self.failed_after_publishing
        return (
            f"{name}: sent {self.sent} / acknowledged {self.acknowledged} / spooled "
            f"{self.spooled} / stored {self.stored} ({len(extra)} of calls that failed after "
            f"publishing{': ' + ', '.join(extra[:5]) if extra else ''}"
            f"{' ...' if len(extra) > 5 else ''}) / duplicates {self.duplicate_rows} rows, "
            f"{self.duplicate_events} events in the topic / lost {self.lost}"
        )

    def problems(self) -> list[str]:
        """Every way the run broke the promise; empty when it was kept."""
        found = []
        if self.acknowledged == 0:
            found.append("no call was acknowledged: nothing was tested")
        if self.lost:
            found.append(f"{self.lost} acknowledged prediction(s) have no row")
        if self.duplicate_rows:
            found.append(f"{self.duplicate_rows} duplicate row(s) in the child tables")
        if self.unexplained:
            found.append(f"rows no caller was answered for: {self.unexplained[:10]}")
        if self.unrecorded_events:
            found.append(f"{self.unrecorded_events} prediction(s) in the topic have no row")
        if self.stored != self.acknowledged + len(self.failed_after_publishing):
            found.append(
                f"stored {self.stored} != acknowledged {self.acknowledged} + "
                f"{len(self.failed_after_publishing)} failed after publishing"
            )
        return found


async def _until_stalled(
    probe: Callable[[], Awaitable[int]], expected: int, stall_timeout_s: float
) -> int:
    """Polls `probe` until it returns `expected`, or until its value has not changed for
    `stall_timeout_s` (a loaded machine makes the recorder slow, not stuck)."""
    last, progressed = -1, time.monotonic()
    while True:
        value = await probe()
        if value == expected:
            return value
        if value != last:
            last, progressed = value, time.monotonic()
        elif time.monotonic() - progressed > stall_timeout_s:
            return value
        await asyncio.sleep(0.25)


async def tally(
    db_url: str,
    bootstrap_servers: str,
    topic: str,
    load: Load,
    *,
    spooled: int,
    stall_timeout_s: float = 60.0,
) -> Tally:
    """Waits until every acknowledged prediction, and every one of the load's predictions in
    the topic, is stored (or no new row has come for `stall_timeout_s`), then counts."""
    acknowledged = list(load.acknowledged)
    conn = await asyncpg.connect(db_url)
    try:

        async def stored_of(ids: list[uuid.UUID]) -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)", ids
                )
            )

        await _until_stalled(lambda: stored_of(acknowledged), len(acknowledged), stall_timeout_s)
        events = await read_prediction_events(bootstrap_servers, topic)
        mine = [i for i, s in events.student.items() if s.startswith(load.prefix + "-")]
        await _until_stalled(lambda: stored_of(mine), len(mine), stall_timeout_s)
        rows = await conn.fetch(
            "SELECT prediction_id, student_id FROM predictions WHERE starts_with(student_id, $1)",
            load.prefix + "-",
        )
        duplicate_rows = await duplicate_child_rows(conn, [r["student_id"] for r in rows])
    finally:
        await conn.close()
    stored = {r["prediction_id"]: r["student_id"] for r in rows}
    extra = sorted(str(i) for i in stored.keys() - load.acknowledged)
    explained = [
        i
        for i in extra
        if stored[uuid.UUID(i)] in load.failed_students and events.per_id[uuid.UUID(i)] > 0
    ]
    return Tally(
        sent=load.sent,
        acknowledged=len(acknowledged),
        spooled=spooled,
        stored=len(stored),
        lost=len(load.acknowledged - stored.keys()),
        duplicate_rows=duplicate_rows,
        duplicate_events=sum(events.per_id[i] - 1 for i in mine if events.per_id[i] > 1),
        failed_after_publishing=explained,
        unexplained=[i for i in extra if i not in set(explained)],
        unrecorded_events=len(set(mine) - stored.keys()),
    )
