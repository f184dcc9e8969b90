"""The inference service's state over HTTP (`STUDENTPERF_INFERENCE_HEALTH_PORT`).

/health is 200 while the service can take predictions, 503 once the spool is full (it refused
the last events offered, and none fit or drained since) or a stop began; with the
detail an operator wants during an outage: whether Kafka is connected and how many events
wait in the spool. /metrics is the service's Prometheus registry (inference_service.metrics):
the counters and histograms updated as calls are served, and these gauges, read at scrape time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from inference_service.core import PredictionCore
from inference_service.delivery import DurablePublisher
from inference_service.metrics import PREFIX
from studentperf.health_http import serve_health


class InferenceHealth(Collector):
    def __init__(
        self, core: PredictionCore, publisher: DurablePublisher, registry: CollectorRegistry
    ) -> None:
        self._core = core
        self._publisher = publisher
        self._registry = registry
        registry.register(self)
        # Set when a graceful stop begins, so a balancer probing /health stops sending.
        self.stopping = False

    def health(self) -> tuple[bool, dict[str, object]]:
        spool = self._publisher.spool
        full = spool.full or spool.bytes >= spool.max_bytes
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
            "spool_set_aside_events": spool.set_aside_records,
            "spool_damaged_bytes": spool.damaged_bytes,
            "calls_in_flight": self._core.in_flight,
            "model_version": self._core.model.version,
        }
        return state in ("serving", "spooling"), detail

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        spool = self._publisher.spool
        for name, help_text, value in [
            (
                "kafka_connected",
                "1 while a Kafka producer is connected and its last publish was acknowledged "
                "in time.",
                1 if self._publisher.kafka_connected else 0,
            ),
            ("spool_events", "Events waiting in the local spool for Kafka.", spool.records),
            ("spool_bytes", "Bytes the local spool holds.", spool.bytes),
            ("spool_max_bytes", "Bytes the local spool may hold.", spool.max_bytes),
            (
                "spool_set_aside_events",
                "Spooled events kept on disk, not sent: written for another cluster or topic.",
                spool.set_aside_records,
            ),
            ("calls_in_flight", "Calls between their model work and answer.", self._core.in_flight),
        ]:
            yield GaugeMetricFamily(PREFIX + name, help_text, value=value)
        yield CounterMetricFamily(
            PREFIX + "calls_cut_off",
            "Calls cancelled between their model work and answer (deadline, client gone, stop).",
            value=self._core.cut_off,
        )
        yield CounterMetricFamily(
            PREFIX + "spool_damaged_bytes",
            "Bytes of the spool skipped as damaged on disk (the readable frames around kept).",
            value=spool.damaged_bytes,
        )
        yield CounterMetricFamily(
            PREFIX + "spool_damaged_regions",
            "Places in the spool where damaged bytes were skipped.",
            value=spool.damaged_regions,
        )

    def metrics(self) -> str:
        return generate_latest(self._registry).decode()

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await serve_health(self.health, self.metrics, host, port)
