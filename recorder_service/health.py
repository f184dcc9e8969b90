"""What the recorder is doing, for logs, tests and an optional HTTP endpoint.

`Status` holds the state (starting, running, degraded, stopped) and counters. When a port is
configured, `serve` answers `GET /health` (200 while running, 503 otherwise, with a JSON body)
and `GET /metrics` (Prometheus text format); see studentperf.status_http.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from studentperf.status_http import serve_status

log = logging.getLogger(__name__)


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    # Waiting for the database or the dead-letter topic: consuming paused, nothing committed.
    DEGRADED = "degraded"
    STOPPED = "stopped"


@dataclass
class Status:
    state: State = State.STARTING
    reason: str = ""
    degraded_since: float = 0.0  # time.monotonic()
    events_stored: int = 0
    events_already_stored: int = 0
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

    def health(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "degraded_for_s": round(self.outage_s, 3),
            "events_stored": self.events_stored,
            "dead_lettered": sum(self.dead_lettered.values()),
        }

    def metrics(self) -> str:
        """Prometheus text exposition format."""
        lines = [f"# TYPE {_PREFIX}state gauge"]
        lines += [
            f'{_PREFIX}state{{state="{state.value}"}} {int(self.state is state)}' for state in State
        ]
        lines += [f"# TYPE {_PREFIX}dead_lettered_total counter"]
        lines += [
            f'{_PREFIX}dead_lettered_total{{reason="{reason}"}} {count}'
            for reason, count in sorted(self.dead_lettered.items())
        ]
        for name, kind, value in [
            ("degraded", "gauge", int(self.state is State.DEGRADED)),
            ("events_stored_total", "counter", self.events_stored),
            ("events_already_stored_total", "counter", self.events_already_stored),
            ("batches_total", "counter", self.batches),
            ("transactions_total", "counter", self.transactions),
            ("commits_total", "counter", self.commits),
            ("commits_refused_total", "counter", self.commits_refused),
            ("retries_total", "counter", self.retries),
            ("batches_abandoned_total", "counter", self.batches_abandoned),
            ("rebalances_total", "counter", self.rebalances),
            ("outages_total", "counter", self.outages),
            ("first_assigned_timestamp_seconds", "gauge", self.first_assigned_at),
            ("last_commit_timestamp_seconds", "gauge", self.last_commit_at),
        ]:
            lines += [f"# TYPE {_PREFIX}{name} {kind}", f"{_PREFIX}{name} {value!r}"]
        return "\n".join(lines) + "\n"


_PREFIX = "studentperf_recorder_"


def parse_metrics(text: str) -> dict[str, float]:
    """`Status.metrics()` read back: sample name (prefix dropped, labels kept) to value."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name.removeprefix(_PREFIX)] = float(value)
    return values


async def serve(status: Status, host: str, port: int) -> asyncio.Server:
    """Starts the endpoint; the caller closes the returned server."""
    return await serve_status(
        lambda: (status.state is State.RUNNING, status.health()), status.metrics, host, port
    )
