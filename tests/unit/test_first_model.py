"""A new installation's first model: the init container's wait and the training Job's
--first-only (deploy/base/inference.yaml, train.yaml)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from inference_service.settings import Settings
from inference_service.wait_for_model import wait_for_model
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
