"""What the recorder is doing, for logs, tests and an optional HTTP endpoint.

`RecorderHealth` holds the state (starting, running, degraded, stopped) and counters; a
recorder calls it its `health`. When a port is configured, `serve` answers `GET /health` (200
while running, 503 otherwise, with `RecorderHealth.summary()` as the JSON body) and
`GET /metrics` (Prometheus text format); see studentperf.health_http.

The metrics are a Prometheus registry of the RecorderHealth's own (never the process-wide
default, so several recorders in one process, as in tests, do not collide): the counters and
gauges are read from it when scraped; batch sizes and write times are histograms observed by the
writer; the consumer lag of each assigned partition is its high watermark (from the consumer's
last fetch) minus the offset this member last committed there (or, before its first commit,
the first offset it read, which was the group's committed offset then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from studentperf.health_http import serve_health

log = logging.getLogger(__name__)


class Offsets(Protocol):
    """What the lag gauge reads of the consumer (aiokafka's AIOKafkaConsumer has it)."""

    def assignment(self) -> set[TopicPartition]: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...


# Batches hold up to STUDENTPERF_BATCH_MAX_EVENTS (4,000 by default) events.
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    # Waiting for the database or the dead-letter topic: consuming paused, nothing committed.
    DEGRADED = "degraded"
    STOPPED = "stopped"


@dataclass
class RecorderHealth:
    state: State = State.STARTING
    reason: str = ""
    degraded_since: float = 0.0  # time.monotonic()
    events_stored: int = 0
    events_already_stored: int = 0
    # Events neither stored nor dead-lettered because their student was erased after they
    # occurred (refused records too: recorder_service/erasure.py); erasures applied.
    events_erased: int = 0
    erasures_applied: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    transactions: int = 0
    commits: int = 0
    commits_refused: int = 0
    retries: int = 0
    batches_abandoned: int = 0
    rebalances: int = 0
    outages: int = 0
    # Wall-clock times (time.time()), comparable across processes: benchmarks read them.
    first_assigned_at: float = 0.0
    last_commit_at: float = 0.0
    # Per assigned partition: the offset this member last committed, else the first it read.
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    consumer: Offsets | None = None  # set once the consumer has started
    registry: CollectorRegistry = field(default_factory=CollectorRegistry, repr=False)

    def __post_init__(self) -> None:
        self.batch_size = Histogram(
            _PREFIX + "batch_size",
            "Events per batch written (one transaction unless split), rejected ones included.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            _PREFIX + "write_duration_seconds",
            "Time to write one batch's rows to the database (COPY, spread, commit).",
            buckets=WRITE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_HealthCollector(self))

    def read_from(self, partition: TopicPartition, offset: int) -> None:
        """Notes the first offset read from a partition, the lag's base until a commit."""
        self.committed.setdefault(partition, offset)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions (re)assigned or revoked: what was known of their offsets is stale."""
        for partition in partitions:
            self.committed.pop(partition, None)

    def lags(self) -> dict[TopicPartition, int]:
        """Records not yet committed, per assigned partition whose high watermark is known."""
        if self.consumer is None:
            return {}
        found = {}
        for partition in self.consumer.assignment():
            highwater = self.consumer.highwater(partition)
            if highwater is None:
                continue  # nothing fetched from it yet
            # Nothing read and nothing committed since assignment: the fetch found it caught up.
            base = self.committed.get(partition, highwater)
            found[partition] = max(highwater - base, 0)
        return found

    def running(self) -> None:
        if self.state is State.DEGRADED:
            log.warning("recovered after %.1f s degraded (%s)", self.outage_s, self.reason)
        self.state, self.reason = State.RUNNING, ""

    def degraded(self, reason: str) -> None:
        if self.state is not State.DEGRADED:
            log.warning("degraded: %s; consuming paused, nothing committed", reason)
            self.degraded_since = time.monotonic()
            self.outages += 1
        self.state, self.reason = State.DEGRADED, reason

    @property
    def outage_s(self) -> float:
        return time.monotonic() - self.degraded_since if self.state is State.DEGRADED else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "degraded_for_s": round(self.outage_s, 3),
            "events_stored": self.events_stored,
            "dead_lettered": sum(self.dead_lettered.values()),
        }

    def metrics(self) -> str:
        """Prometheus text exposition format."""
        return generate_latest(self.registry).decode()


class _HealthCollector(Collector):
    """The RecorderHealth's counters and gauges, read at scrape time."""

    def __init__(self, health: RecorderHealth) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        health = self._health
        state = GaugeMetricFamily(
            _PREFIX + "state", "1 for the state the recorder is in.", labels=["state"]
        )
        for each in State:
            state.add_metric([each.value], int(health.state is each))
        yield state
        dead_lettered = CounterMetricFamily(
            _PREFIX + "dead_lettered",
            "Records sent to the dead-letter topic, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(health.dead_lettered.items()):
            dead_lettered.add_metric([reason], count)
        yield dead_lettered
        lag = GaugeMetricFamily(
            _PREFIX + "consumer_lag",
            "Records of an assigned partition not yet committed: high watermark - committed.",
            labels=["topic", "partition"],
        )
        for tp, records in sorted(health.lags().items()):
            lag.add_metric([tp.topic, str(tp.partition)], records)
        yield lag
        yield GaugeMetricFamily(
            _PREFIX + "degraded", "1 while degraded.", value=int(health.state is State.DEGRADED)
        )
        for name, help_text, value in [
            ("events_stored", "Predictions newly written.", health.events_stored),
            (
                "events_already_stored",
                "Predictions found already written (redeliveries).",
                health.events_already_stored,
            ),
            (
                "events_erased",
                "Events neither stored nor dead-lettered: their student was erased after they"
                " occurred.",
                health.events_erased,
            ),
            ("erasures_applied", "Erasure events applied (each once).", health.erasures_applied),
            ("batches", "Batches written and accounted.", health.batches),
            ("transactions", "Database transactions run, splits included.", health.transactions),
            ("commits", "Offset commits that succeeded.", health.commits),
            ("commits_refused", "Offset commits refused or timed out.", health.commits_refused),
            ("retries", "Retries of a write or dead-lettering during outages.", health.retries),
            (
                "batches_abandoned",
                "Batches left uncommitted (partitions revoked mid-write).",
                health.batches_abandoned,
            ),
            ("rebalances", "Partition assignments received.", health.rebalances),
            ("outages", "Times the recorder became degraded.", health.outages),
        ]:
            yield CounterMetricFamily(_PREFIX + name, help_text, value=value)
        for name, help_text, stamp in [
            (
                "first_assigned_timestamp_seconds",
                "When partitions were first assigned (Unix time).",
                health.first_assigned_at,
            ),
            (
                "last_commit_timestamp_seconds",
                "When offsets were last committed (Unix time).",
                health.last_commit_at,
            ),
        ]:
            yield GaugeMetricFamily(_PREFIX + name, help_text, value=stamp)


_PREFIX = "studentperf_recorder_"


def parse_metrics(text: str) -> dict[str, float]:
    """`RecorderHealth.metrics()` read back: sample name (prefix dropped, labels kept, as Prometheus
    writes them: `name{label="value",...}`) to value."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name.removeprefix(_PREFIX)] = float(value)
    return values


async def serve(health: RecorderHealth, host: str, port: int) -> asyncio.Server:
    """Starts the endpoint; the caller closes the returned server."""
    return await serve_health(
        lambda: (health.state is State.RUNNING, health.summary()), health.metrics, host, port
    )
