"""The recorder's state, its metrics text, and its settings."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from recorder_service.health import RecorderHealth, State, parse_metrics
from recorder_service.settings import Settings
from studentperf.config import ConfigError


def test_degraded_then_running_counts_one_outage() -> None:
    health = RecorderHealth()
    health.running()
    health.degraded("database unavailable: refused")
    health.degraded("database unavailable: still refused")
    assert (health.state, health.outages) == (State.DEGRADED, 1)
    assert health.summary()["state"] == "degraded"
    health.running()
    assert (health.state, health.reason) == (State.RUNNING, "")


def test_metrics_are_prometheus_text() -> None:
    health = RecorderHealth(events_stored=12)
    health.dead_lettered["undecodable"] += 2
    health.degraded("db")
    text = health.metrics()
    assert "studentperf_recorder_events_stored_total 12.0\n" in text
    assert 'studentperf_recorder_dead_lettered_total{reason="undecodable"} 2.0\n' in text
    assert 'studentperf_recorder_state{state="degraded"} 1.0\n' in text
    assert "studentperf_recorder_degraded 1.0\n" in text
    for line in text.splitlines():
        assert line.startswith(
            (
                "# HELP studentperf_recorder_",
                "# TYPE studentperf_recorder_",
                "studentperf_recorder_",
            )
        )
    values = parse_metrics(text)
    assert values["events_stored_total"] == 12
    assert values['dead_lettered_total{reason="undecodable"}'] == 2


def test_two_statuses_have_registries_of_their_own() -> None:
    first, second = RecorderHealth(), RecorderHealth()
    first.batch_size.observe(10)
    assert parse_metrics(first.metrics())["batch_size_count"] == 1
    assert parse_metrics(second.metrics())["batch_size_count"] == 0


class FakeOffsets:
    def __init__(self, highwater: dict[TopicPartition, int | None]) -> None:
        self._highwater = highwater

    def assignment(self) -> set[TopicPartition]:
        return set(self._highwater)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._highwater[partition]


def test_lag_is_highwater_minus_committed_per_partition() -> None:
    read, committed, caught_up, unfetched = (TopicPartition("t", n) for n in range(4))
    health = RecorderHealth()
    health.consumer = FakeOffsets({read: 50, committed: 70, caught_up: 9, unfetched: None})
    health.read_from(read, 40)  # read from 40, nothing committed yet
    health.read_from(committed, 10)
    health.committed[committed] = 65  # then committed up to 65
    assert health.lags() == {read: 10, committed: 5, caught_up: 0}
    text = health.metrics()
    assert 'studentperf_recorder_consumer_lag{partition="0",topic="t"} 10.0' in text
    health.forget({read})
    assert health.lags()[read] == 0


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
