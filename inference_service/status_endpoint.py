"""The inference service's state over HTTP (`STUDENTPERF_INFERENCE_HEALTH_PORT`).

/health is 200 while the service can take predictions (the spool is not full), with the
detail an operator wants during an outage: whether Kafka is connected and how many events
wait in the spool. /metrics has the same as Prometheus gauges and counters.
"""

from __future__ import annotations

import asyncio

from inference_service.core import PredictionCore
from inference_service.delivery import DurablePublisher
from studentperf.status_http import serve_status

_PREFIX = "studentperf_inference_"


class InferenceStatus:
    def __init__(self, core: PredictionCore, publisher: DurablePublisher) -> None:
        self._core = core
        self._publisher = publisher
        # Set when a graceful stop begins, so a balancer probing /health stops sending.
        self.stopping = False

    def health(self) -> tuple[bool, dict[str, object]]:
        spool = self._publisher.spool
        full = spool.bytes >= spool.max_bytes
        if self.stopping:
            state = "stopping"
        elif full:
            state = "spool full"
        else:
            state = "spooling" if spool.records else "serving"
        detail: dict[str, object] = {
            "state": state,
            "kafka_connected": self._publisher.kafka_connected,
            "spool_events": spool.records,
            "spool_bytes": spool.bytes,
            "spool_max_bytes": spool.max_bytes,
            "calls_in_flight": self._core.in_flight,
            "model_version": self._core.model.version,
        }
        return state in ("serving", "spooling"), detail

    def metrics(self) -> str:
        spool = self._publisher.spool
        lines: list[str] = []
        for name, kind, value in [
            ("kafka_connected", "gauge", int(self._publisher.kafka_connected)),
            ("spool_events", "gauge", spool.records),
            ("spool_bytes", "gauge", spool.bytes),
            ("spool_max_bytes", "gauge", spool.max_bytes),
            ("calls_in_flight", "gauge", self._core.in_flight),
            ("calls_cut_off_total", "counter", self._core.cut_off),
        ]:
            lines += [f"# TYPE {_PREFIX}{name} {kind}", f"{_PREFIX}{name} {value}"]
        return "\n".join(lines) + "\n"

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await serve_status(self.health, self.metrics, host, port)
