"""Builds and runs the gRPC server: prediction service, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from inference_service import event_loop, reflection
from inference_service.auth import TokenAuthInterceptor, parse_token_table
from inference_service.core import PredictionCore
from inference_service.delivery import DurablePublisher, open_durable_publisher
from inference_service.health_endpoint import InferenceHealth
from inference_service.history_store import PostgresHistoryStore
from inference_service.inflight import InFlightBytes
from inference_service.metrics import InferenceMetrics
from inference_service.model import ServedModel
from inference_service.model_follower import ModelFollower
from inference_service.publisher import KafkaPublisher
from inference_service.reload import ModelReloader, load_at_start, watches
from inference_service.servicer import PredictionServicer, add_to_server
from inference_service.settings import Settings
from inference_service.stop_bound import IN_FLIGHT_MARGIN_S
from studentperf.config import ConfigError
from studentperf.v1 import prediction_service_pb2

log = logging.getLogger(__name__)

# Bytes of large requests decoded or served at once: one maximum-size request's worth (or ten
# batches of 1,000 students); more wait their turn. Decoded, a maximum-size request costs up to
# about 33 MB (nothing but empty batch items); served, a valid one costs more. Under a flood of
# them, with and without a token, `make bench` (infra/bench/flood.py) measured peaks of 305 and
# 357 MiB in two runs (178 MiB at rest); allowing two at once, 360 MiB in a short run.
REQUESTS_IN_FLIGHT = 1
# Requests this small are never queued (inference_service.inflight): a Predict takes at most
# 117 bytes, a batch of 100 full students 11,100.
SMALL_REQUEST_BYTES = 16 * 1024

# Allocations between collections of the youngest generation (see the end of start_server).
YOUNG_GC_THRESHOLD = 10_000

SERVICE_NAME = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name


class RunningServer:
    """A server and what it needs to stop cleanly; `port` and `status_server` are set once
    bound."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        publisher: DurablePublisher,
        core: PredictionCore,
        status: InferenceHealth,
        metrics: InferenceMetrics,
        history: PostgresHistoryStore,
        reloader: ModelReloader | None,
    ) -> None:
        self.server = server
        self.history = history
        self.metrics = metrics
        self.core = core
        self.port = 0
        self.health = health_servicer
        self.publisher = publisher
        self.reloader = reloader
        self.status_server: asyncio.Server | None = None
        self.status = status

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING first (so balancers stop sending), then in-flight calls, then the flush.

        Every call answered OK has its events acknowledged or spooled by then; what is still in
        the spool stays on disk for the next start.
        """
        self.status.stopping = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        await self.core.drain()
        # server.stop can return while handlers still run (grpc/grpc#37239): their events
        # must reach Kafka or the spool before the spool closes.
        try:
            async with asyncio.timeout(grace_s + IN_FLIGHT_MARGIN_S):
                while self.core.in_flight:  # noqa: ASYNC110 (no event marks the last one out)
                    await asyncio.sleep(0.01)
        except TimeoutError:
            log.error("%d call(s) still in flight after the grace period", self.core.in_flight)
        if self.reloader is not None:
            await self.reloader.stop()
        await self.publisher.stop()
        await self.history.close()
        if self.status_server is not None:
            self.status_server.close()


async def _closed(status_server: asyncio.Server) -> None:
    status_server.close()
    await status_server.wait_closed()


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Binds the listen address; one taken (or not this machine's) stops the start, named."""
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        raise ConfigError(
            f"STUDENTPERF_LISTEN_ADDRESS: cannot listen on {address}: is another service "
            "there (or the address not this machine's)? Stop it, or set another address"
        ) from None


async def serve_status(status: InferenceHealth, settings: Settings) -> asyncio.Server | None:
    """The HTTP /health and /metrics, when a port is set; one taken stops the start, named."""
    if not settings.health_port:
        return None
    try:
        return await status.serve(settings.health_host, settings.health_port)
    except OSError as error:
        raise ConfigError(
            f"STUDENTPERF_INFERENCE_HEALTH_PORT: cannot listen on "
            f"{settings.health_host}:{settings.health_port}: {error.strerror or error}"
        ) from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; mutual TLS when a client CA is too."""
    if not (settings.tls_cert_file or settings.tls_key_file):
        if settings.tls_client_ca_file:
            raise ConfigError("STUDENTPERF_TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and KEY_FILE")
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ConfigError("set both STUDENTPERF_TLS_CERT_FILE and STUDENTPERF_TLS_KEY_FILE")
    try:
        cert = Path(settings.tls_cert_file).read_bytes()
        key = Path(settings.tls_key_file).read_bytes()
        client_ca = (
            Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
        )
    except OSError as error:
        raise ConfigError(f"cannot read a TLS file: {error}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def start_server(settings: Settings) -> RunningServer:
    """Loads the model, binds the port, connects to Kafka and starts serving."""
    # This server's own registry: several servers in one process (tests) never collide.
    metrics = InferenceMetrics(CollectorRegistry())
    # What a start refused part-way took is given back, newest first: a start again in this
    # process (a test, a worker's successor) finds the spool folder free, and no database
    # connection outlives the refusal.
    async with contextlib.AsyncExitStack() as taken:
        follower = None
        if settings.model_source == "database":
            follower = ModelFollower(settings.shared.database_url, settings.models_dir, metrics)
            taken.push_async_callback(follower.close)
        # What the database cannot give now, the folder may hold from before.
        model, failed = await load_at_start(
            settings.models_dir, expected_pass_mark=settings.pass_mark, follower=follower
        )
        log.info("serving model %s from %s", model.version, settings.models_dir)
        metrics.named_unloadable(failed is not None)
        kafka = KafkaPublisher(
            settings.shared.kafka_bootstrap_servers,
            settings.shared.kafka_topic,
            publish_timeout_s=settings.publish_timeout_s,
            extra_options=settings.shared.kafka_security.client_options(),
            metrics=metrics,
        )
        publisher = await open_durable_publisher(
            kafka, Path(settings.spool_dir), max_bytes=settings.spool_max_bytes, metrics=metrics
        )
        # Stopped, the spool folder is let go.
        taken.push_async_callback(publisher.stop)
        # Opened on the first history call: predictions never wait for the database.
        history = PostgresHistoryStore(settings.history_database_url)
        taken.push_async_callback(history.close)
        running = _build(settings, metrics, model, failed, follower, publisher, history)
        if running.reloader is None and follower is not None:
            await follower.close()  # nothing follows the pointer after the start
        # Bound before anything starts: a port already taken fails with little to undo. The
        # health port first: a gRPC port once bound is let go only by a server that started,
        # so a refused health port after it would keep the listen address from the next start.
        running.status_server = await serve_status(running.status, settings)
        if running.status_server is not None:
            taken.push_async_callback(_closed, running.status_server)
        running.port = bind(running.server, settings.listen_address, server_credentials(settings))
        taken.pop_all()  # from here, running.stop gives everything back
    try:
        # Serving does not wait for Kafka: until it answers, events go to the spool.
        publisher.start()
        await running.server.start()
        for name in ("", SERVICE_NAME):
            await running.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if running.reloader is not None:
            running.reloader.start()
    except BaseException:
        await running.stop(grace_s=0)
        raise
    # Everything loaded so far (libraries, the model) lives as long as the process. Frozen, it
    # is left out of the collector's full passes, which otherwise walk its ~140,000 objects
    # and stop every call for about 100 ms now and then: most of Predict's p99 at load.
    gc.freeze()
    # A call allocates enough that the default first-generation threshold (700) collects every
    # ~20 calls; at 10,000, measured with gc.callbacks at concurrency 64, collections took
    # 0.7% of the service's CPU instead of 2.1%, each under 2 ms. Later generations keep theirs.
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    return running


def _build(
    settings: Settings,
    metrics: InferenceMetrics,
    model: ServedModel,
    failed: Path | None,
    follower: ModelFollower | None,
    publisher: DurablePublisher,
    history: PostgresHistoryStore,
) -> RunningServer:
    """The server and its parts, neither bound nor started (port 0, no health port yet)."""
    core = PredictionCore(
        model,
        publisher,
        max_batch_size=settings.max_batch_size,
        history=history,
        microbatch_wait_s=settings.microbatch_wait_ms / 1000,
        microbatch_max=settings.microbatch_max,
        metrics=metrics,
        current_term=settings.current_term,
        held_events=publisher,
        erasure_audit=history,
        erasure_wait_s=settings.erasure_wait_s,
    )
    reloader = None
    if settings.model_poll_interval_s > 0 and watches(settings.models_dir):
        reloader = ModelReloader(
            settings.models_dir,
            expected_pass_mark=settings.pass_mark,
            serving=model,
            install=core.use_model,
            interval_s=settings.model_poll_interval_s,
            follower=follower,
            failed=failed,
            metrics=metrics,
        )
    interceptors = []
    # A table of comments only is still on: it lets nobody in.
    clients = parse_token_table(settings.auth_tokens) if settings.auth_tokens else None
    if clients is not None:
        interceptors.append(TokenAuthInterceptor(clients, metrics=metrics))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Workers share the port their supervisor reserved (inference_service.workers).
            # One process shares it with nobody: gRPC's default is SO_REUSEPORT on, under
            # which a second server on a taken address binds too and the kernel splits the
            # connections between the two (another checkout's `make up`, an old instance).
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
    )
    in_flight = InFlightBytes(
        REQUESTS_IN_FLIGHT * settings.max_request_bytes, small=SMALL_REQUEST_BYTES
    )
    add_to_server(PredictionServicer(core, metrics, in_flight, clients), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable((SERVICE_NAME, health.SERVICE_NAME), server)
    status = InferenceHealth(core, publisher, metrics.registry)
    return RunningServer(
        server, health_servicer, publisher, core, status, metrics, history, reloader
    )


async def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then stops gracefully."""
    log.info(
        "starting: kafka=%s topic=%s",
        settings.shared.kafka_bootstrap_servers,
        settings.shared.kafka_topic,
    )
    running = await start_server(settings)
    host = settings.listen_address.rsplit(":", 1)[0]
    log.info(
        "listening on %s:%d (%s event loop)", host, running.port, event_loop.running_loop_name()
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight calls (up to %.0f s)", settings.shutdown_grace_s)
    await running.stop(settings.shutdown_grace_s)
    log.info(
        "stopped: %d call(s) cut off in flight, %d event(s) left in the spool",
        running.core.cut_off,
        running.publisher.spool.records,
    )
