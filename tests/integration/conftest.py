"""The real services for integration tests, started once per test session.

A Kafka broker and a PostgreSQL server run as child processes on free ports, with their data
in temporary folders; a model is trained for the session; each test module that needs the
application gets a fresh topic and database, so modules cannot see each other's rows.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from infra.devstack import KafkaBroker, PostgresServer, free_port
from recorder_service.consumer import Recorder
from recorder_service.service import run as run_recorder
from recorder_service.settings import Settings as RecorderSettings
from studentperf.config import DatabaseRole, SharedSettings
from studentperf.migrate import apply_migrations
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


async def running_kafka(folder: Path) -> AsyncIterator[KafkaBroker]:
    broker = KafkaBroker(folder, port=free_port(), controller_port=free_port())
    await broker.start_and_wait(timeout=120)
    yield broker
    broker.stop()


async def running_postgres(folder: Path) -> AsyncIterator[PostgresServer]:
    server = PostgresServer(folder, port=free_port())
    await server.start_and_wait(timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaBroker]:
    async for broker in running_kafka(tmp_path_factory.mktemp("kafka")):
        yield broker


@pytest.fixture(scope="session")
async def postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PostgresServer]:
    async for server in running_postgres(tmp_path_factory.mktemp("postgres")):
        yield server


@pytest.fixture(scope="module")
async def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[KafkaBroker]:
    """A broker of the test module's own, which its tests may stop, pause or kill."""
    async for broker in running_kafka(tmp_path_factory.mktemp("own-kafka")):
        yield broker


@pytest.fixture(scope="module")
async def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PostgresServer]:
    """A database server of the test module's own, which its tests may stop or kill."""
    async for server in running_postgres(tmp_path_factory.mktemp("own-pg")):
        yield server


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained by the real `python -m trainer`, as `make train` does."""
    models = tmp_path_factory.mktemp("models")
    command = [sys.executable, "-m", "trainer", "--rows", "3000", "--models-dir", str(models)]
    # The session's model must neither read nor write a local database.
    subprocess.run(
        [*command, "--no-database"],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    return models


@dataclass(frozen=True)
class Stack:
    """Where one test module's application lives: its topic and its database."""

    kafka: KafkaBroker
    shared: SharedSettings
    model_path: Path

    @property
    def topic(self) -> str:
        return self.shared.kafka_topic

    @property
    def database_url(self) -> str:
        """As the owner: for the tests' own checks and clean-ups."""
        return self.shared.database_url

    def database_url_as(self, role: DatabaseRole) -> str:
        """As one process's role (migration 0004): what that process may do, and no more."""
        return self.database_url.replace(f"//{DatabaseRole.OWNER}@", f"//{role}@", 1)

    def shared_as(self, role: DatabaseRole) -> SharedSettings:
        return replace(self.shared, database_url=self.database_url_as(role))


async def fresh_topic_and_database(
    kafka: KafkaBroker, postgres: PostgresServer, prefix: str
) -> str:
    """A new topic and a migrated database, both under the returned name."""
    name = await migrated_database(postgres, prefix)
    await kafka.create_topic(name, partitions=3)
    return name


async def migrated_database(postgres: PostgresServer, prefix: str) -> str:
    """A new database with every migration applied; returns its name."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    await postgres.ensure_database(name)
    conn = await asyncpg.connect(postgres.dsn(name))
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return name


@pytest.fixture(scope="module")
async def stack(kafka: KafkaBroker, postgres: PostgresServer, model_path: Path) -> Stack:
    name = await fresh_topic_and_database(kafka, postgres, "t")
    shared = SharedSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        kafka_topic=name,
        database_url=postgres.dsn(name),
    )
    return Stack(kafka, shared, model_path)


def inference_settings(stack: Stack, spool_dir: Path, **changes: Any) -> InferenceSettings:
    """A module's inference service: its own role, spool folder and history reader."""
    settings = InferenceSettings(
        shared=stack.shared_as(DatabaseRole.INFERENCE),
        listen_address="127.0.0.1:0",
        models_dir=str(stack.model_path),
        spool_dir=str(spool_dir),
        history_database_url=stack.database_url_as(DatabaseRole.ANALYST),
    )
    return replace(settings, **changes)


async def serving(settings: InferenceSettings) -> AsyncIterator[RunningServer]:
    running = await start_server(settings)
    yield running
    await running.stop(grace_s=5)


@pytest.fixture(scope="module")
async def inference(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    async for running in serving(inference_settings(stack, tmp_path_factory.mktemp("spool"))):
        yield running


@pytest.fixture(scope="module")
async def stub(inference: RunningServer) -> AsyncIterator[api_grpc.PredictionServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{inference.port}") as channel:
        yield api_grpc.PredictionServiceStub(channel)


class RecorderProcess:
    """A recorder running as a task of the test's event loop, stoppable and restartable."""

    def __init__(self, settings: RecorderSettings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[Recorder] | None = None

    def start(self, **changes: object) -> None:
        self.settings = replace(self.settings, **changes)  # type: ignore[arg-type]
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(run_recorder(self.settings, self._stop))

    async def stop(self) -> Recorder:
        assert self._task is not None
        self._stop.set()
        return await asyncio.wait_for(self._task, 30)


@pytest.fixture(scope="module")
async def recorder(stack: Stack) -> AsyncIterator[RecorderProcess]:
    process = RecorderProcess(
        RecorderSettings(shared=stack.shared_as(DatabaseRole.RECORDER), batch_max_wait_ms=50)
    )
    process.start()
    yield process
    await process.stop()


@pytest.fixture(scope="module")
async def db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()
