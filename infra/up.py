"""`make up`: the whole stack on this machine, in the foreground, until Ctrl-C.

Starts Kafka and PostgreSQL (data under .local/), creates the topic and the database, applies
the migrations as the owner, trains a model if there is none, then runs the recorder and the
inference service as child processes with the default settings, each connected to the database
as its own role (migration 0004), the inference service spooling to .local/inference/spool.
Ctrl-C (or SIGTERM) stops everything it started, in reverse order, each one gracefully.

Ports: the broker's is the one STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS names (default 9092, the
controller on the next), PostgreSQL's is STUDENTPERF_POSTGRES_PORT (default 5432), the service's
STUDENTPERF_LISTEN_ADDRESS; `make demo` and the other targets follow the same variables. Each
port (and a health port set) is checked before anything starts: one taken stops `make up`
at once, naming the variable that moves it.

Kafka is one broker; with STUDENTPERF_KAFKA_BROKERS=3 (`make up KAFKA_BROKERS=3`) it is a
three-node cluster, replication factor 3 and min.insync.replicas 2 (infra.kafka_cluster). That
is three JVMs, too heavy a default for a laptop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference_service.model import load_served_model
from inference_service.settings import Settings as InferenceSettings
from infra.devstack import (
    DEFAULT_DATABASE,
    DEFAULT_KAFKA_PORT,
    KafkaBroker,
    PostgresServer,
    Service,
    ServiceError,
    default_kafka,
    default_postgres,
    local_dir,
    port_open,
)
from infra.kafka_cluster import KafkaCluster, default_kafka_cluster
from infra.processes import ChildProcess
from recorder_service.settings import Settings as RecorderSettings
from studentperf.config import ConfigError, DatabaseRole, dev_postgres_port, env_int
from studentperf.migrate import apply_migrations
from studentperf.model_artifact import ModelArtifactError


def say(message: str) -> None:
    print(f"[up] {message}", flush=True)


def service_child(script: str, database_url: str, env: dict[str, str]) -> ChildProcess:
    """A Python service run by its console script (`studentperf-serve`, ...), its output on
    this terminal."""
    # A person reads this terminal: text logs unless they asked for a format. The stack's
    # state stays under .local/ (make clean removes it); the database is the one started here.
    return ChildProcess.console_script(
        script,
        env={
            "STUDENTPERF_LOG_FORMAT": "text",
            "STUDENTPERF_SPOOL_DIR": str(local_dir() / "inference" / "spool"),
            **os.environ,
            **env,
            "STUDENTPERF_DATABASE_URL": database_url,
        },
    )


async def wait_serving(address: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise ServiceError(f"the inference service did not serve within {timeout:.0f} s")
            await asyncio.sleep(0.3)


@dataclass(frozen=True, slots=True)
class Port:
    """A port the stack listens on, and the setting that moves it (None: fixed)."""

    name: str
    host: str
    port: int
    moved_by: str | None


def stack_ports(
    services: list[Service],
    inference: InferenceSettings,
    recorder: RecorderSettings,
    *,
    one_broker: bool,
) -> list[Port]:
    """Every port `make up` is about to take: checked before anything starts, so a port held
    by another stack (or by a service of this machine's) stops it at once, naming the setting."""
    ports: list[Port] = []
    for service in services:
        moved_by = None
        if isinstance(service, PostgresServer):
            moved_by = "STUDENTPERF_POSTGRES_PORT"
        elif one_broker:
            moved_by = "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS"
        ports.append(Port(service.name, service.host, service.port, moved_by))
        if isinstance(service, KafkaBroker):
            ports.append(
                Port(
                    f"{service.name}'s controller", service.host, service.controller_port, moved_by
                )
            )
    host, _, port = inference.listen_address.rpartition(":")
    if port.isdigit() and int(port) > 0:
        host = host.strip("[]")
        local = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        ports.append(Port("the inference service", local, int(port), "STUDENTPERF_LISTEN_ADDRESS"))
    if inference.health_port:
        ports.append(
            Port(
                "the inference service's /health",
                inference.health_host,
                inference.health_port,
                "STUDENTPERF_INFERENCE_HEALTH_PORT",
            )
        )
    if recorder.health_port:
        ports.append(
            Port(
                "the recorder's /health",
                recorder.health_host,
                recorder.health_port,
                "STUDENTPERF_RECORDER_HEALTH_PORT",
            )
        )
    return ports


def check_ports_free(ports: list[Port]) -> None:
    for port in ports:
        if port_open(port.host, port.port):
            move = f"Stop it, or set {port.moved_by} to move it." if port.moved_by else "Stop it."
            raise ServiceError(
                f"{port.host}:{port.port} is already taken, so {port.name} cannot start "
                f"there: is another stack (or a system service) running? {move}"
            )


async def ensure_model(settings: InferenceSettings, database_url: str) -> None:
    """Trains a model when there is none the service could serve (none, or an unusable one)."""
    try:
        model = await asyncio.to_thread(
            load_served_model, settings.models_dir, expected_pass_mark=settings.pass_mark
        )
        say(f"model: {model.version} (make train builds a new one)")
        return
    except ModelArtifactError as error:
        say(f"model: none to serve ({error}); training one")
    trainer = ChildProcess.console_script(
        "studentperf-train",
        "--models-dir",
        settings.models_dir,
        "--pass-mark",
        f"{settings.pass_mark:g}",
        # The current model, if any, cannot be served, so it is no bar to promotion.
        "--force",
        env={"STUDENTPERF_DATABASE_URL": database_url},
    )
    trainer.start()
    if await trainer.wait_async(timeout=float("inf")) != 0:
        raise ServiceError("training failed (see above)")


def chosen_kafka(env: Mapping[str, str]) -> KafkaBroker | KafkaCluster:
    """One broker (the default), or the three-node cluster for STUDENTPERF_KAFKA_BROKERS=3."""
    brokers = env_int(env, "KAFKA_BROKERS", 1, minimum=1)
    if brokers == 1:
        return default_kafka(port=broker_port(env))
    if brokers == 3:
        return default_kafka_cluster()
    raise ConfigError(f"STUDENTPERF_KAFKA_BROKERS: 1 or 3, not {brokers}")


def broker_port(env: Mapping[str, str]) -> int:
    """The one broker runs where the services are told to look: the port of
    STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS, which must then be an address on this machine."""
    address = env.get("STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS")
    if address is None:
        return DEFAULT_KAFKA_PORT
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        raise ConfigError(
            "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS: make up runs its broker on this machine, "
            f"so it must be 127.0.0.1:<port>, not {address!r}"
        )
    return int(port)


async def run(stop: asyncio.Event) -> int:
    settings = InferenceSettings.from_env(os.environ)
    partitions = env_int(os.environ, "TOPIC_PARTITIONS", 3, minimum=1)
    # How long Kafka keeps events: the horizon after which no copy of an erased student's
    # events remains in the topic (README, Erasure). Set when the topics are created.
    retention_days = env_int(os.environ, "TOPIC_RETENTION_DAYS", 7, minimum=1)
    retention = {"retention.ms": str(retention_days * 86_400_000)}
    kafka = chosen_kafka(os.environ)
    postgres = default_postgres(port=dev_postgres_port(os.environ))
    infra: list[KafkaBroker | KafkaCluster | PostgresServer] = [kafka, postgres]
    as_role = {role: postgres.dsn(DEFAULT_DATABASE, user=role) for role in DatabaseRole}
    # The services reach Kafka through every node, so any one of them may be down.
    bootstrap = {"STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
    apps = [
        service_child("studentperf-record", as_role[DatabaseRole.RECORDER], bootstrap),
        service_child("studentperf-serve", as_role[DatabaseRole.INFERENCE], bootstrap),
    ]
    started: list[KafkaBroker | KafkaCluster | PostgresServer] = []
    try:
        nodes = kafka.nodes if isinstance(kafka, KafkaCluster) else [kafka]
        recorder_settings = RecorderSettings.from_env(os.environ)
        one_broker = not isinstance(kafka, KafkaCluster)
        check_ports_free(
            stack_ports([*nodes, postgres], settings, recorder_settings, one_broker=one_broker)
        )
        for service in infra:
            service.start()
            started.append(service)
        for service in infra:
            waited = await service.wait_ready(timeout=120)
            say(f"{service.describe()}: ready in {waited:.1f} s")
        await postgres.ensure_database(DEFAULT_DATABASE)
        conn = await asyncpg.connect(as_role[DatabaseRole.OWNER])
        try:
            applied = await apply_migrations(conn)
        finally:
            await conn.close()
        say(f"database {DEFAULT_DATABASE}: {len(applied)} migration(s) applied")
        topic = settings.shared.kafka_topic
        kept = f"events kept {retention_days} days (STUDENTPERF_TOPIC_RETENTION_DAYS)"
        if not await kafka.create_topic(topic, partitions, configs=retention):
            kept = "existing topic: its retention stays as it was set"
        say(f"topic {topic}: {kept}")
        say(f"topic {topic}: {partitions} partitions, {replicas(kafka)}")
        dead_letters = RecorderSettings.from_env(os.environ).dead_letters_to
        await kafka.create_topic(dead_letters, partitions, configs=retention)
        say(f"topic {dead_letters}: records the recorder cannot write")
        await ensure_model(settings, as_role[DatabaseRole.TRAINER])
        for app in apps:
            app.start()
        await wait_serving(settings.listen_address)
        print_try_it(settings.listen_address)
        while not stop.is_set():
            if any(app.returncode is not None for app in apps):
                say("a service exited; stopping everything")
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return 0
    except ServiceError as error:
        say(f"error: {error}")
        return 1
    finally:
        say("stopping")
        for app in reversed(apps):
            await app.stop_async()
        for service in reversed(started):
            service.stop()
            say(f"{service.name}: stopped")


def replicas(kafka: KafkaBroker | KafkaCluster) -> str:
    if isinstance(kafka, KafkaCluster):
        return (
            f"{len(kafka.nodes)} replicas, min.insync.replicas {kafka.nodes[0].min_insync_replicas}"
        )
    return "1 replica"


def print_try_it(address: str) -> None:
    grpcurl = Path(".local/bin/grpcurl")
    request = (
        '{"student": {"profile": {"student_id": "s-1001", "age": 16}, '
        '"academic_record": {"attendance_percentage": 92, "previous_gpa": 3.1}}}'
    )
    say("ready: the inference service listens on " + address)
    say("try it:")
    print(
        f"  {grpcurl} -plaintext -d '{request}' \\\n"
        f"    {address} studentperf.v1.PredictionService/Predict\n"
        "  make demo        # a few predictions and a batch, then the rows that landed\n"
        "Ctrl-C stops everything.",
        flush=True,
    )


def main() -> int:
    async def guarded() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run(stop)

    try:
        return asyncio.run(guarded())
    except ConfigError as error:
        say(f"error: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
