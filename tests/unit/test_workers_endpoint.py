"""The supervisor's side of N workers, without processes: merged metrics, the reserved port."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inference_service.workers import Families, merge_worker_metrics, reserve_port
from studentperf.config import ConfigError


def worker_metrics(calls: int) -> str:
    registry = CollectorRegistry()
    counter = Counter(
        "studentperf_inference_predictions", "p", ["model_version"], registry=registry
    )
    counter.labels("v1").inc(calls)
    Histogram("studentperf_inference_rpc_duration_seconds", "d", registry=registry).observe(0.01)
    return generate_latest(registry).decode()


def test_each_workers_samples_are_labelled_and_one_family_of_each_name_is_written() -> None:
    text = generate_latest(
        Families(merge_worker_metrics([(0, worker_metrics(3)), (1, worker_metrics(5))]))
    )

    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    predictions = families["studentperf_inference_predictions"]
    totals = {s.labels["worker"]: s.value for s in predictions.samples if s.name.endswith("_total")}
    assert totals == {"0": 3, "1": 5}
    assert all(s.labels["model_version"] == "v1" for s in predictions.samples)
    durations = families["studentperf_inference_rpc_duration_seconds"]
    counts = [s for s in durations.samples if s.name.endswith("_count")]
    assert sorted(s.labels["worker"] for s in counts) == ["0", "1"]
    assert text.decode().count("# TYPE studentperf_inference_predictions_total counter") == 1


def test_port_zero_is_reserved_for_processes_that_share_it() -> None:
    with reserve_port("127.0.0.1:0") as address:
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        sharing = socket.socket()
        sharing.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sharing.bind((host, int(port)))  # as a worker's server does
        sharing.listen()
        sharing.close()
        alone = socket.socket()
        with pytest.raises(OSError):
            alone.bind((host, int(port)))  # without SO_REUSEPORT: taken
        alone.close()


def test_a_port_taken_by_another_is_a_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with (
            pytest.raises(ConfigError, match=r"cannot listen on .*Stop it, or set another address"),
            reserve_port(f"127.0.0.1:{taken.getsockname()[1]}"),
        ):
            pass
    finally:
        taken.close()


def test_the_supervisor_never_loads_grpc() -> None:
    # Its workers are spawned, but a supervisor free of gRPC state also stays safe to fork.
    check = "import sys, inference_service.workers; print('grpc' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "False"
