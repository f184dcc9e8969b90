"""A new installation's first model: the init container's wait and the training Job's
--first-only (deploy/base/inference.yaml, train.yaml)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest

import studentperf.model_store as model_store
from inference_service.server import start_server
from inference_service.settings import Settings
from inference_service.wait_for_model import wait_for_model
from studentperf.model_artifact import CURRENT
from tests.unit.test_model_reload import save, tiny_model
from trainer.__main__ import main, parse_args, served_version


def place_version(models: Path, version: str) -> None:
    (models / version).mkdir(parents=True)
    (models / version / "model.joblib").write_bytes(b"stand-in")
    os.symlink(version, models / "current")


async def test_the_wait_ends_once_the_folder_has_a_current_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    settings = Settings.from_env(
        {"STUDENTPERF_MODELS_DIR": str(models), "STUDENTPERF_SPOOL_DIR": str(tmp_path / "spool")}
    )
    said: list[str] = []
    waiting = asyncio.create_task(wait_for_model(settings, interval_s=0.01, say=said.append))
    await asyncio.sleep(0.1)
    assert not waiting.done() and said, "it waits, saying so, while there is no model"
    place_version(models, "v1")
    assert await asyncio.wait_for(waiting, 5) == "v1"
    assert "models/current" in said[0]


async def test_a_fixed_version_folder_needs_no_wait(tmp_path: Path) -> None:
    """STUDENTPERF_MODELS_DIR may name one version's folder (served fixed, no link)."""
    place_version(tmp_path / "models", "v1")
    settings = Settings.from_env(
        {
            "STUDENTPERF_MODELS_DIR": str(tmp_path / "models" / "v1"),
            "STUDENTPERF_SPOOL_DIR": str(tmp_path / "spool"),
        }
    )
    assert await asyncio.wait_for(wait_for_model(settings, interval_s=0.01), 5) == "v1"


def test_first_only_trains_nothing_once_a_version_is_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    args = ["--first-only", "--no-database", "--synthetic", "--models-dir", str(models)]
    assert served_version(parse_args(args, {})) is None
    place_version(models, "v1")
    assert served_version(parse_args(args, {})) == "v1"
    assert main(args) == 0
    assert "a model is served already (v1): not training" in capsys.readouterr().out
    assert sorted(p.name for p in models.iterdir()) == ["current", "v1"]


class Connection:
    """A database connection that is never asked anything (the reads below are replaced)."""

    def is_closed(self) -> bool:
        return False

    def terminate(self) -> None:
        pass

    async def close(self, timeout: float | None = None) -> None:
        pass


async def test_a_new_pod_starts_on_what_its_init_container_brought_while_the_db_flickers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the database's two reads are stand-ins (the pointer, a version's stored files); the
    follower, the init container's wait and the service's start are the real ones. The pod's
    folder is new (an emptyDir); the database stops answering between the init container and
    the service's start: the service serves what the folder holds."""
    trainer = tmp_path / "trainer"
    version = save(trainer, tiny_model(1), 1)
    stored = [
        (p.name, p.read_bytes(), model_store.sha256_hex(p.read_bytes()))
        for p in sorted((trainer / version).iterdir())
    ]

    async def connect(*args: object, **kwargs: object) -> Connection:
        return Connection()

    async def current_pointer(conn: object) -> str:
        return version

    async def stored_files(conn: object, name: str) -> list[tuple[str, bytes, str]]:
        assert name == version
        return stored

    monkeypatch.setattr(asyncpg, "connect", connect)
    monkeypatch.setattr(model_store, "current_pointer", current_pointer)
    monkeypatch.setattr(model_store, "stored_files", stored_files)
    models = tmp_path / "models"
    settings = Settings.from_env(
        {
            "STUDENTPERF_MODEL_SOURCE": "database",
            "STUDENTPERF_MODELS_DIR": str(models),
            "STUDENTPERF_DATABASE_URL": "postgresql://studentperf_inference@db/studentperf",
            "STUDENTPERF_LISTEN_ADDRESS": "127.0.0.1:0",
            "STUDENTPERF_SPOOL_DIR": str(tmp_path / "spool"),
            "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        }
    )
    assert await wait_for_model(settings, say=lambda _: None) == version
    assert (models / CURRENT).readlink().name == version

    async def refused(*args: object, **kwargs: object) -> Connection:
        raise ConnectionRefusedError(111, "Connect call failed")

    monkeypatch.setattr(asyncpg, "connect", refused)
    running = await start_server(settings)
    try:
        assert running.core.model.version == version
    finally:
        await running.stop(grace_s=0)
