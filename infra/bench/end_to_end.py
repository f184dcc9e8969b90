"""End to end: a steady Predict load through inference -> Kafka -> recorder -> PostgreSQL, and
how long each prediction takes to become a committed row.

An inference service and a recorder run as real processes on a topic and database of their
own; `infra.bench.steady_load` (another process) sends Predict at a fixed rate. Meanwhile a
poller reads the `predictions` table every POLL_S and notes when each row first became
visible: a row is visible only once its transaction has committed, so

    lag = first seen by the poller - predicted_at

where `predicted_at` is the event's `occurred_at`, stamped by the service when it made the
prediction (same host, same clock). The figure over-states the commit lag by at most one poll
interval plus the query. The row's own `recorded_at` (PostgreSQL's now(): the recorder's
transaction start, before its COPY and inserts, so earlier than the commit) gives a second,
under-stating figure; the two bracket the truth.

Backlog: at a moment T, the predictions made by T whose rows are not yet visible. It is taken
in the middle and at the end of the load; a recorder that keeps up has about the same backlog
at both (a few batches), and every row is visible soon after the load ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from infra.bench import Bench
from infra.bench.process import RecorderProcess, peak_rss_mb
from infra.bench.recorder import fresh_stack
from infra.devstack import KafkaBroker, PostgresServer, free_port, repo_root
from infra.processes import ChildProcess
from studentperf.persistence import benchmarks

RATE = 1000.0
SECONDS, QUICK_SECONDS = 30.0, 4.0
POLL_S = 0.05
DRAIN_TIMEOUT_S = 120.0
TARGET_P99_LAG_S = 1.0
TARGET_RECORDER_RSS_MB = 200


@dataclass(frozen=True)
class EndToEnd:
    rate: float  # predictions answered OK per second, over the schedule
    ok: int
    failed: dict[str, int]
    first_errors: dict[str, str]  # status -> details of its first failure
    stored: int  # rows visible at the end
    lag_p50_ms: float  # first seen - predicted_at
    lag_p99_ms: float
    lag_max_ms: float
    recorded_p50_ms: float  # recorded_at (transaction start) - predicted_at
    recorded_p99_ms: float
    backlog_middle: int
    backlog_end: int
    drain_s: float  # from the end of the load until every answered prediction was visible
    generator_slip_p99_ms: float
    recorder_peak_mb: float
    service_peak_mb: float

    @property
    def keeps_up(self) -> bool:
        """Every answer stored, and the backlog at the end no bigger than a second's worth more
        than in the middle (a second of load is far more than the recorder's batches hold)."""
        return self.stored >= self.ok and self.backlog_end <= self.backlog_middle + self.rate


class Poller:
    """First sighting of each committed prediction row."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.seen: dict[str, tuple[float, float, float]] = {}  # id -> (seen, predicted, recorded)
        self.stop = asyncio.Event()
        self.want: set[str] = set()  # ids to wait for; caught_up is set once all are seen
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self.stop.is_set():
                now = time.time()
                # A transaction that started long ago may commit just now: look back generously.
                rows = await conn.fetch(benchmarks.RECORDED_SINCE, now - 60)
                seen_at = time.time()  # visible by the time the answer arrived
                for row in rows:
                    if row["id"] not in self.seen:
                        self.seen[row["id"]] = (seen_at, float(row["p"]), float(row["r"]))
                if self.want and self.want.issubset(self.seen):
                    self.caught_up.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), POLL_S)
        finally:
            await conn.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))] if ordered else float("nan")


def backlog(seen: dict[str, tuple[float, float, float]], moment: float) -> int:
    return sum(1 for s, p, _ in seen.values() if p <= moment < s)


async def run(
    folder: Path,
    kafka: KafkaBroker,
    start_service: Callable[[str, str], ChildProcess],
    quick: bool,
    say: Callable[[str], None],
) -> EndToEnd:
    """`start_service(topic, address)` starts an inference service publishing to `topic` and
    returns its process once it serves; this function stops it."""
    seconds = QUICK_SECONDS if quick else SECONDS
    postgres = PostgresServer(folder / "postgres", port=free_port())
    await postgres.start_and_wait(timeout=120)
    try:
        topic, dsn = await fresh_stack(Bench(kafka, postgres, folder, quick))
        recorder = RecorderProcess(
            {
                "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "STUDENTPERF_KAFKA_TOPIC": topic,
                "STUDENTPERF_DATABASE_URL": dsn,
                "STUDENTPERF_CONSUMER_GROUP": f"e2e-{topic}",
                "STUDENTPERF_LOG_LEVEL": "WARNING",
            },
            folder / "e2e-recorder.log",
        )
        recorder.start()
        address = f"127.0.0.1:{free_port()}"
        service = await asyncio.to_thread(start_service, topic, address)
        try:
            return await _measure(address, dsn, recorder, service, seconds, say)
        finally:
            service.stop(30)
            recorder.stop()
    finally:
        postgres.stop()


async def _wait_recorder(recorder: RecorderProcess, timeout_s: float = 120.0) -> None:
    """Until the recorder has its partitions: timing starts with a consumer in place."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metrics = await asyncio.to_thread(recorder.metrics)
            if metrics.get("first_assigned_timestamp_seconds", 0) > 0:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the recorder got no partitions:\n{recorder.log_tail()}")
        await asyncio.sleep(0.2)


async def _measure(
    address: str,
    dsn: str,
    recorder: RecorderProcess,
    service: ChildProcess,
    seconds: float,
    say: Callable[[str], None],
) -> EndToEnd:
    await _wait_recorder(recorder)
    poller = Poller(dsn)
    polling = asyncio.create_task(poller.run())
    say(f"end to end: {RATE:,.0f} Predict/s for {seconds:g} s")
    generator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "infra.bench.steady_load",
        address,
        f"--rate={RATE:g}",
        f"--seconds={seconds:g}",
        cwd=repo_root(),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await generator.communicate()
    if generator.returncode != 0:
        raise RuntimeError(f"the load generator failed ({generator.returncode})")
    summary = json.loads(out)
    load_started = summary["started_at"]
    load_ended = load_started + summary["seconds"]
    answered = set(summary["answered"])
    poller.want = answered
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(poller.caught_up.wait(), DRAIN_TIMEOUT_S)
    poller.stop.set()
    await polling
    # Only the predictions answered OK: a call the client saw fail may still have its row.
    seen = {pid: times for pid, times in poller.seen.items() if pid in answered}
    # Predictions whose rows were never seen count as lagging past the end of the wait.
    lags = [s - p for s, p, _ in seen.values()]
    lags += [DRAIN_TIMEOUT_S + seconds] * (len(answered) - len(seen))
    recorded = [r - p for _, p, r in seen.values()]
    last_seen = max((s for s, _, _ in seen.values()), default=load_ended)
    return EndToEnd(
        rate=summary["rate"],
        ok=summary["ok"],
        failed=summary["failed"],
        first_errors=summary["first_errors"],
        stored=len(seen),
        lag_p50_ms=percentile(lags, 0.5) * 1000,
        lag_p99_ms=percentile(lags, 0.99) * 1000,
        lag_max_ms=max(lags, default=float("nan")) * 1000,
        recorded_p50_ms=percentile(recorded, 0.5) * 1000,
        recorded_p99_ms=percentile(recorded, 0.99) * 1000,
        backlog_middle=backlog(seen, (load_started + load_ended) / 2),
        backlog_end=backlog(seen, load_ended),
        drain_s=max(0.0, last_seen - load_ended),
        generator_slip_p99_ms=summary["slip_p99_ms"],
        recorder_peak_mb=peak_rss_mb(recorder.pid),
        service_peak_mb=peak_rss_mb(service.pid),
    )
