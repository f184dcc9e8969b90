"""The inference service's Prometheus metrics, in a registry of its own.

Each running server has its own `CollectorRegistry` (not the process-wide default), so tests
and several servers in one process never share or collide on a metric. Counters and
histograms are updated where the work happens (the servicer's status mapping, the core, the
Kafka publisher); the gauges that mirror existing state (spool depth, in-flight calls) are
read when scraped, so the hot path pays nothing for them.

Per-call cost is kept small: labelled children are looked up once per (method, code) and
model version and cached here, rather than through `.labels()` on every call.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "studentperf_inference_"

# Predict takes about a millisecond, a large BatchPredict seconds.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# A publish waits for the broker's acknowledgement, a busy process's hold included.
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._rpc_seconds = Histogram(
            PREFIX + "rpc_duration_seconds",
            "Time to answer a PredictionService call, by method and gRPC status code; "
            "its _count is the number of calls.",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self._predictions = Counter(
            PREFIX + "predictions",
            "Predictions made (answered or not), by model version.",
            ["model_version"],
            registry=registry,
        )
        self._passes = Counter(
            PREFIX + "predicted_passes",
            "Predictions of a pass, by model version; divided by predictions: the pass rate.",
            ["model_version"],
            registry=registry,
        )
        self._publish_seconds = Histogram(
            PREFIX + "publish_duration_seconds",
            "Time from handing events to the Kafka producer to the broker's acknowledgement, "
            "per publish (a call's events, a micro-batch, or a spool replay chunk).",
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self._publish_failures = Counter(
            PREFIX + "publish_failures",
            "Publishes Kafka did not acknowledge in time or refused (their events are spooled).",
            registry=registry,
        )
        self._spooled = Counter(
            PREFIX + "spooled_events",
            "Events written to the local spool because Kafka did not take them.",
            registry=registry,
        )
        self._artifacts_refused = Counter(
            PREFIX + "model_artifacts_refused",
            "Versions the database's pointer named that were refused unread: their bytes did "
            "not hash to what the trainer recorded (inference_service.model_follower).",
            registry=registry,
        )
        self._pointer_refused = Gauge(
            PREFIX + "model_pointer_refused",
            "1 while the database's pointer names a version this process refused unread; 0 "
            "once it names another (the counter above only says when).",
            registry=registry,
        )
        self._named_unloadable = Gauge(
            PREFIX + "model_named_unloadable",
            "1 while the version this process is told to serve (the database's pointer, or "
            "the models folder's current link) does not load here (made for another pass mark, "
            "another scikit-learn), so it serves an older one; 0 while it serves the named one.",
            registry=registry,
        )
        self._rpc_children: dict[tuple[str, str], Histogram] = {}
        self._version_children: dict[str, tuple[Counter, Counter]] = {}

    def rpc(self, method: str, code: str, seconds: float) -> None:
        child = self._rpc_children.get((method, code))
        if child is None:
            child = self._rpc_children[method, code] = self._rpc_seconds.labels(method, code)
        child.observe(seconds)

    def predicted(self, model_version: str, count: int, passes: int) -> None:
        children = self._version_children.get(model_version)
        if children is None:
            children = self._version_children[model_version] = (
                self._predictions.labels(model_version),
                self._passes.labels(model_version),
            )
        children[0].inc(count)
        if passes:
            children[1].inc(passes)

    def published(self, seconds: float) -> None:
        self._publish_seconds.observe(seconds)

    def publish_failed(self) -> None:
        self._publish_failures.inc()

    def artifact_refused(self) -> None:
        self._artifacts_refused.inc()
        self._pointer_refused.set(1)

    def pointer_followed(self) -> None:
        """The pointer names a version that was not refused (or none)."""
        self._pointer_refused.set(0)

    def named_unloadable(self, unloadable: bool) -> None:
        self._named_unloadable.set(1 if unloadable else 0)

    def spooled(self, count: int) -> None:
        self._spooled.inc(count)
