"""STUDENTPERF_MODEL_SOURCE: the service's setting and the trainer's --publish default."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inference_service.settings import Settings
from studentperf.config import ConfigError
from trainer.__main__ import parse_args
from trainer.monitor.cli import parse_args as monitor_args


def test_the_folder_is_the_default_and_database_is_read_in_any_case() -> None:
    assert Settings.from_env({}).model_source == "folder"
    assert Settings.from_env({"STUDENTPERF_MODEL_SOURCE": "Database"}).model_source == "database"


def test_an_unknown_source_names_the_variable_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"STUDENTPERF_MODEL_SOURCE='disk'.*folder, database"):
        Settings.from_env({"STUDENTPERF_MODEL_SOURCE": "disk"})


def test_the_trainer_publishes_when_the_source_is_the_database() -> None:
    assert not parse_args([], {}).publish
    assert parse_args([], {"STUDENTPERF_MODEL_SOURCE": "database"}).publish
    assert not parse_args(["--no-publish"], {"STUDENTPERF_MODEL_SOURCE": "database"}).publish
    assert parse_args(["--publish"], {}).publish


def test_publishing_without_a_database_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--publish", "--no-database"], {})
    assert "--publish needs a database" in capsys.readouterr().err


def test_the_monitors_retrain_publishes_when_the_source_is_the_database() -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    assert not monitor_args([], {}, now).publish
    assert monitor_args([], {"STUDENTPERF_MODEL_SOURCE": "database"}, now).publish


def test_the_trainer_refuses_an_unknown_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args([], {"STUDENTPERF_MODEL_SOURCE": "nfs"})
    assert "STUDENTPERF_MODEL_SOURCE='nfs' is not valid" in capsys.readouterr().err
