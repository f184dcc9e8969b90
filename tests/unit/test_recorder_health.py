"""The recorder's state, its metrics text, and its settings."""

from __future__ import annotations

import pytest

from recorder_service.health import State, Status
from recorder_service.settings import Settings
from studentperf.config import ConfigError


def test_degraded_then_running_counts_one_outage() -> None:
    status = Status()
    status.running()
    status.degraded("database unavailable: refused")
    status.degraded("database unavailable: still refused")
    assert (status.state, status.outages) == (State.DEGRADED, 1)
    assert status.health()["state"] == "degraded"
    status.running()
    assert (status.state, status.reason) == (State.RUNNING, "")


def test_metrics_are_prometheus_text() -> None:
    status = Status(events_stored=12)
    status.dead_lettered["undecodable"] += 2
    status.degraded("db")
    text = status.metrics()
    assert "studentperf_recorder_events_stored_total 12\n" in text
    assert 'studentperf_recorder_dead_lettered_total{reason="undecodable"} 2\n' in text
    assert 'studentperf_recorder_state{state="degraded"} 1\n' in text
    assert "studentperf_recorder_degraded 1\n" in text
    for line in text.splitlines():
        assert line.startswith(("# TYPE studentperf_recorder_", "studentperf_recorder_"))


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "STUDENTPERF_KAFKA_TOPIC": "events",
            "STUDENTPERF_RECORDER_HEALTH_PORT": "8081",
            "STUDENTPERF_BATCH_MAX_EVENTS": "500",
        }
    )
    assert settings.dead_letters_to == "events.dead-letter"
    assert settings.health_port == 8081 and settings.batch_max_events == 500
    named = Settings.from_env({"STUDENTPERF_DEAD_LETTER_TOPIC": "dlq"})
    assert named.dead_letters_to == "dlq"


@pytest.mark.parametrize("name", ["RECORDER_HEALTH_PORT", "BATCH_MAX_EVENTS", "REVOKE_WAIT_MS"])
def test_bad_settings_name_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=f"STUDENTPERF_{name}"):
        Settings.from_env({f"STUDENTPERF_{name}": "-1"})


def test_a_port_beyond_65535_is_refused() -> None:
    with pytest.raises(ConfigError, match="STUDENTPERF_RECORDER_HEALTH_PORT"):
        Settings.from_env({"STUDENTPERF_RECORDER_HEALTH_PORT": "70000"})
