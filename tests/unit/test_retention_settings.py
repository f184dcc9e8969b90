"""Retention's settings: off by default, and a bad value stops the recorder naming the variable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recorder_service.retention import cutoff_for
from recorder_service.settings import Settings
from studentperf.config import ConfigError


def test_retention_is_off_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.retention_days == 0
    assert (settings.retention_interval_s, settings.retention_batch) == (3_600, 5_000)


def test_retention_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "STUDENTPERF_RETENTION_DAYS": "365",
            "STUDENTPERF_RETENTION_INTERVAL_S": "60",
            "STUDENTPERF_RETENTION_BATCH": "100",
        }
    )
    assert (settings.retention_days, settings.retention_interval_s) == (365, 60)
    assert settings.retention_batch == 100


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STUDENTPERF_RETENTION_DAYS", "-1"),
        ("STUDENTPERF_RETENTION_DAYS", "a year"),
        # Its cutoff would fall before the year 1: the recorder's retention task died of it.
        ("STUDENTPERF_RETENTION_DAYS", "1000000"),
        ("STUDENTPERF_RETENTION_INTERVAL_S", "0"),
        ("STUDENTPERF_RETENTION_BATCH", "0"),
    ],
)
def test_a_bad_retention_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_cutoff_is_that_many_days_before_now() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert cutoff_for(30, now) == datetime(2026, 1, 30, 12, tzinfo=UTC)
