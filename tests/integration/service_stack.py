"""Both services as real child processes on a broker and database server of the test module's
own, which its tests may stop, pause or kill.

`ServiceStack.create` gives each test a fresh topic and database, the two processes configured
by environment variables as in production but not started, and the inference service's status
port; `close` stops the processes and brings back a broker or database a test left stopped.
Used by test_faults.py, test_workers.py and test_broker_stalls.py; `ServicePair` (the two
processes alone) by test_faults_replicated.py and test_security.py too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from infra.bench.process import HealthClient
from infra.devstack import KafkaBroker, PostgresServer, free_port
from infra.up import wait_serving
from tests.integration.conftest import fresh_topic_and_database
from tests.integration.processes import Load, ServiceProcess, Tally, tally


@dataclass
class ServicePair:
    """The inference service and the recorder as child processes, configured by environment
    variables as in production."""

    address: str
    status: HealthClient  # the inference service's /health and /metrics
    inference: ServiceProcess
    recorder: ServiceProcess

    @classmethod
    def configure(
        cls, shared: Mapping[str, str], model_path: Path, folder: Path, **inference_env: str
    ) -> Self:
        """Both, not started: on the broker, topic and database `shared` names (and whatever
        else it sets for both), the inference service on a free port with its status on
        another, its spool and both logs in `folder`; `inference_env` adds to (or overrides)
        the inference service's variables."""
        address, status_port = f"127.0.0.1:{free_port()}", free_port()
        inference = ServiceProcess(
            "inference_service",
            {
                **shared,
                "STUDENTPERF_LISTEN_ADDRESS": address,
                "STUDENTPERF_MODELS_DIR": str(model_path),
                "STUDENTPERF_SPOOL_DIR": str(folder / "spool"),
                "STUDENTPERF_INFERENCE_HEALTH_PORT": str(status_port),
                **inference_env,
            },
            folder / "inference.log",
        )
        recorder = ServiceProcess(
            "recorder_service",
            {**shared, "STUDENTPERF_BATCH_MAX_WAIT_MS": "50"},
            folder / "recorder.log",
        )
        # A worker supervisor asks each worker in turn, up to 1 s each, before it answers.
        return cls(address, HealthClient(status_port, timeout_s=10), inference, recorder)

    async def start(self, *, kafka_up: bool = True) -> None:
        """Starts the recorder, then the inference service, and waits until it serves and,
        unless the test keeps Kafka away (`kafka_up=False`), publishes to Kafka."""
        self.recorder.start()
        self.inference.start()
        await wait_serving(self.address)
        if kafka_up:
            await wait_kafka_connected(self.status)

    async def stop(self) -> None:
        await self.inference.stop_async()
        await self.recorder.stop_async()


@dataclass
class ServiceStack(ServicePair):
    kafka: KafkaBroker
    postgres: PostgresServer
    topic: str
    database_url: str
    spool: Path

    @classmethod
    async def create(
        cls,
        kafka: KafkaBroker,
        postgres: PostgresServer,
        model_path: Path,
        folder: Path,
        prefix: str,
        **inference_env: str,
    ) -> Self:
        """`inference_env` adds to (or overrides) the inference service's variables."""
        name = await fresh_topic_and_database(kafka, postgres, prefix)
        pair = ServicePair.configure(
            {
                "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "STUDENTPERF_KAFKA_TOPIC": name,
                "STUDENTPERF_DATABASE_URL": postgres.dsn(name),
            },
            model_path,
            folder,
            **{"STUDENTPERF_PUBLISH_TIMEOUT_S": "1", **inference_env},
        )
        return cls(
            pair.address,
            pair.status,
            pair.inference,
            pair.recorder,
            kafka,
            postgres,
            name,
            postgres.dsn(name),
            folder / "spool",
        )

    async def spooled(self) -> int:
        """Events the running inference service has spooled since it started."""
        metrics = await asyncio.to_thread(self.status.metrics)
        return int(metrics.get("studentperf_inference_spooled_events_total", 0))

    async def spool_events(self) -> int:
        """Events waiting in the running inference service's spool now."""
        _, body = await asyncio.to_thread(self.status.get, "/health")
        return int(json.loads(body)["spool_events"])

    async def kafka_back(self) -> None:
        self.kafka.start()
        await self.kafka.wait_ready(120)

    async def postgres_back(self) -> None:
        self.postgres.start()
        await self.postgres.wait_ready(60)

    async def tally(self, load: Load, spooled: int, stall_timeout_s: float = 60.0) -> Tally:
        return await tally(
            self.database_url,
            self.kafka.bootstrap_servers,
            self.topic,
            load,
            spooled=spooled,
            stall_timeout_s=stall_timeout_s,
        )

    async def close(self) -> None:
        """Stops both services; leaves the module's broker and database running for the next
        test."""
        await self.stop()
        if not self.kafka.running:
            await self.kafka_back()
        if not self.postgres.running:
            await self.postgres_back()


async def wait_kafka_connected(status: HealthClient, timeout_s: float = 60.0) -> None:
    """Waits until the inference service behind `status` has connected to Kafka: it serves
    before, spooling, which a test of what Kafka acknowledges must not start under."""
    async with asyncio.timeout(timeout_s):
        while True:
            _, body = await asyncio.to_thread(status.get, "/health")
            if json.loads(body)["kafka_connected"]:
                return
            await asyncio.sleep(0.1)
