"""Where `make up` runs its broker and database, and where the default DSNs point: one port each,
so a second stack (the developer's-loop test's) can run beside the user's."""

import os
import random
import socket
import subprocess
from pathlib import Path

import pytest

from inference_service.settings import Settings as InferenceSettings
from infra.devstack import ServiceError, default_kafka, default_postgres, service
from infra.devstack.service import free_port
from infra.up import broker_port, check_ports_free, stack_ports
from recorder_service.settings import Settings as RecorderSettings
from studentperf.config import ConfigError, DatabaseRole, SharedSettings


def test_the_postgres_port_moves_every_default_dsn() -> None:
    env = {"STUDENTPERF_POSTGRES_PORT": "15432"}
    trainer = SharedSettings.from_env(env, DatabaseRole.TRAINER)
    assert trainer.database_url == "postgresql://studentperf_trainer@127.0.0.1:15432/studentperf"
    history = InferenceSettings.from_env(env).history_database_url
    assert history == "postgresql://studentperf_analyst@127.0.0.1:15432/studentperf"
    unset = SharedSettings.from_env({}, DatabaseRole.ANALYST).database_url
    assert unset == "postgresql://studentperf_analyst@127.0.0.1:5432/studentperf"


def test_a_dsn_given_wins_over_the_port() -> None:
    env = {"STUDENTPERF_POSTGRES_PORT": "15432", "STUDENTPERF_DATABASE_URL": "postgresql://a@db/x"}
    assert SharedSettings.from_env(env, DatabaseRole.TRAINER).database_url == "postgresql://a@db/x"


def test_a_bad_postgres_port_is_named() -> None:
    with pytest.raises(ConfigError, match="STUDENTPERF_POSTGRES_PORT"):
        SharedSettings.from_env({"STUDENTPERF_POSTGRES_PORT": "70000"}, DatabaseRole.TRAINER)


def test_the_broker_runs_where_the_services_look() -> None:
    assert broker_port({}) == 9092
    assert broker_port({"STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092"}) == 19092
    assert broker_port({"STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": "localhost:19092"}) == 19092


@pytest.mark.parametrize("address", ["kafka:9092", "127.0.0.1:9092,127.0.0.1:9094", "127.0.0.1"])
def test_a_broker_elsewhere_is_refused_naming_the_variable(address: str) -> None:
    with pytest.raises(ConfigError, match="STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS"):
        broker_port({"STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": address})


def test_a_free_port_is_handed_out_once_even_before_it_is_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same draw twice, as random.choice may give: a broker and its controller asked for
    # ports before either bound one, and both got the same.
    draws = iter([29_001, 29_001, 29_002])
    monkeypatch.setattr(random, "choice", lambda _: next(draws))
    monkeypatch.setattr(service, "_handed_out", set())
    assert [free_port(), free_port()] == [29_001, 29_002]


def test_a_taken_port_of_the_stack_is_named_with_the_setting_that_moves_it() -> None:
    env = {
        "STUDENTPERF_LISTEN_ADDRESS": "0.0.0.0:50051",
        "STUDENTPERF_INFERENCE_HEALTH_PORT": "9464",
        "STUDENTPERF_RECORDER_HEALTH_PORT": "9465",
    }
    ports = stack_ports(
        [default_kafka(port=19092), default_postgres(port=15432)],
        InferenceSettings.from_env(env),
        RecorderSettings.from_env(env),
        one_broker=True,
    )
    assert [(p.host, p.port, p.moved_by) for p in ports] == [
        ("127.0.0.1", 19092, "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS"),
        ("127.0.0.1", 19093, "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS"),
        ("127.0.0.1", 15432, "STUDENTPERF_POSTGRES_PORT"),
        ("127.0.0.1", 50051, "STUDENTPERF_LISTEN_ADDRESS"),
        ("127.0.0.1", 9464, "STUDENTPERF_INFERENCE_HEALTH_PORT"),
        ("127.0.0.1", 9465, "STUDENTPERF_RECORDER_HEALTH_PORT"),
    ]
    # The inference service's port was not checked before: the stack started, and the service
    # then failed to bind (or, with gRPC's SO_REUSEPORT, shared the port with the other one).
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        inference = InferenceSettings.from_env({"STUDENTPERF_LISTEN_ADDRESS": address})
        with pytest.raises(ServiceError, match=f"{address} is already taken.*STUDENTPERF_LISTEN"):
            check_ports_free(stack_ports([], inference, RecorderSettings(), one_broker=True))
    finally:
        taken.close()


def erase_command(env: dict[str, str], *args: str) -> str:
    """The command `make erase` runs (make -n prints it), in this repository."""
    root = Path(__file__).resolve().parents[2]
    base = {k: v for k, v in os.environ.items() if not k.startswith("STUDENTPERF_")}
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(root), "erase", "STUDENT=s-1", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_make_erase_calls_the_service_where_make_up_runs_it() -> None:
    # make up and make demo follow STUDENTPERF_LISTEN_ADDRESS; make erase called 50051 instead.
    moved = {"STUDENTPERF_LISTEN_ADDRESS": "127.0.0.1:50152"}
    assert erase_command(moved).endswith("--target 127.0.0.1:50152")
    assert "--target" not in erase_command({})  # the script's default, 127.0.0.1:50051
    assert "--target" not in erase_command({**moved, "STUDENTPERF_TARGET": "api:443"})
    assert erase_command(moved, "TARGET=api:443").endswith("--target api:443")
