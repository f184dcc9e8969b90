"""The servers the serving benchmark drives, as real subprocesses: the inference service (with
one worker and with STUDENTPERF_WORKERS=2), `infra.bench.trivial_server` (the ceiling), and
MLServer serving the same pipeline (infra.bench.mlserver_peer); how to start them, know they
serve, and read their CPU time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference_service.encoding import encode_student
from infra.bench.load_driver import (
    EVENT_LOOP,
    SERVICE,
    TRIVIAL,
    TRIVIAL_ASYNCIO,
    UVLOOP,
    WORKERS,
    student,
)
from infra.bench.mlserver_peer import (
    BATCHED,
    UNBATCHED,
    MLServerPeer,
    MLServerUnavailable,
    ensure_venv,
    prepare,
    same_score,
)
from infra.bench.process import HealthClient
from infra.devstack import KafkaBroker, free_port, repo_root
from infra.processes import ChildProcess
from infra.processes import started as process
from studentperf.features import FEATURE_COLUMNS
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.student_pb2 import Student

TOPIC = "bench-predictions"
MLSERVER_STUDENT = 7

Say = Callable[[str], None]


def wait_serving(address: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing serving at {address} after {timeout_s:g} s")
            time.sleep(0.2)


def wait_port(address: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))


def train_model(models: Path) -> None:
    command = [sys.executable, "-m", "trainer", "--no-database", "--rows", "3000"]
    subprocess.run(
        [*command, "--models-dir", str(models)],
        check=True,
        cwd=repo_root(),
        capture_output=True,
    )


def service_env(
    folder: Path,
    address: str,
    bootstrap_servers: str,
    workers: int = 1,
    loop: str = UVLOOP,
    health_port: int = 0,
) -> dict[str, str]:
    return {
        **os.environ,
        "STUDENTPERF_LISTEN_ADDRESS": address,
        "STUDENTPERF_MODELS_DIR": str(folder / "models"),
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": TOPIC,
        "STUDENTPERF_SPOOL_DIR": str(folder / f"spool-{workers}w-{loop}"),
        "STUDENTPERF_WORKERS": str(workers),
        "STUDENTPERF_EVENT_LOOP": loop,
        "STUDENTPERF_INFERENCE_HEALTH_PORT": str(health_port),
        "STUDENTPERF_LOG_LEVEL": os.environ.get("STUDENTPERF_LOG_LEVEL", "WARNING"),
    }


def process_tree(pid: int) -> list[int]:
    """The process and its living descendants (MLServer's inference workers and the service's
    workers are child processes)."""
    found = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:  # it ended meanwhile
            continue
        found.append(current)
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its living descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for current in process_tree(pid):
        try:
            # After the ")" that ends the command name: utime and stime are fields 14 and 15.
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def topic_size(bootstrap_servers: str) -> int:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap_servers)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(TOPIC) or set()
        ends = await consumer.end_offsets([TopicPartition(TOPIC, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


def published_events(bootstrap_servers: str, at_least: int, timeout_s: float = 30.0) -> int:
    """The topic's record count once it reaches `at_least` (or the timeout passes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = asyncio.run(topic_size(bootstrap_servers))
        if found >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def full_student_row(number: int) -> dict[str, Any]:
    """`student(number)` as the model's feature row, encoded the way the service does."""
    message = json_format.ParseDict(student(number), Student())
    return dict(zip(FEATURE_COLUMNS, encode_student(message, "student").features, strict=True))


def service_score(address: str, number: int) -> float:
    with grpc.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        request = json_format.ParseDict({"student": student(number)}, api.PredictRequest())
        return float(stub.Predict(request, timeout=30).prediction.predicted_final_score)


def check_mlserver(peer: MLServerPeer, service_address: str, say: Say) -> None:
    """Before any timing: MLServer answers real predictions, the service's own for the student."""
    ours = service_score(service_address, MLSERVER_STUDENT)
    for model in (UNBATCHED, BATCHED):
        theirs = peer.predict(model)
        if not same_score(ours, theirs):
            raise RuntimeError(
                f"MLServer's {model} answered {theirs!r} for the student the service scores "
                f"{ours!r}: not the same pipeline, so not a comparison"
            )
    say(f"MLServer answers {ours:.3f} for bench-{MLSERVER_STUDENT}, as the service does")


def setup_mlserver(folder: Path, say: Say) -> MLServerPeer | str:
    """The prepared peer, or why it cannot run here (the table says so instead of a figure)."""
    try:
        python = ensure_venv(say)
        return prepare(python, folder / "models", folder, full_student_row(MLSERVER_STUDENT))
    except MLServerUnavailable as why:
        say(f"MLServer not measured: {why}")
        return str(why)


@dataclass(frozen=True)
class Peers:
    """The running servers by name (load_driver's TRIVIAL, SERVICE, ...): address and pid."""

    addresses: dict[str, str]
    pids: dict[str, int]
    mlserver: MLServerPeer | None
    health_ports: dict[str, int]  # the services' (load_driver.WORKERS), for their /metrics

    def spooled_events(self) -> int:
        """Events every service has written to its spool so far."""
        return sum(spooled_events(port) for port in self.health_ports.values())


SPOOLED = "studentperf_inference_spooled_events_total"


def spooled_events(health_port: int) -> int:
    """The service's count of spooled events, from its /metrics."""
    return spooled_in(HealthClient(health_port).get("/metrics")[1])


def spooled_in(metrics_text: str) -> int:
    """The count of spooled events in a service's /metrics, summed over its workers (the
    supervisor labels each worker's samples)."""
    return round(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics_text.splitlines()
            if line.startswith((SPOOLED + " ", SPOOLED + "{"))
        )
    )


@contextmanager
def running_peers(
    folder: Path, broker: KafkaBroker, mlserver: MLServerPeer | str, say: Say
) -> Iterator[Peers]:
    """Every server, started and serving (MLServer's answers checked); stopped on leaving."""
    with ExitStack() as running:
        addresses: dict[str, str] = {}
        pids: dict[str, int] = {}
        health_ports: dict[str, int] = {}
        for name, workers in WORKERS.items():
            addresses[name] = f"127.0.0.1:{free_port()}"
            health_ports[name] = free_port()
            loop = EVENT_LOOP.get(name, UVLOOP)
            env = service_env(
                folder, addresses[name], broker.bootstrap_servers, workers, loop, health_ports[name]
            )
            command = [sys.executable, "-m", "inference_service"]
            pids[name] = running.enter_context(process(command, env, folder / f"{name}.log")).pid
        for name in (TRIVIAL, TRIVIAL_ASYNCIO):
            port = free_port()
            addresses[name] = f"127.0.0.1:{port}"
            trivial = [sys.executable, "-m", "infra.bench.trivial_server", "--port", str(port)]
            trivial += ["--event-loop", EVENT_LOOP.get(name, UVLOOP)]
            pids[name] = running.enter_context(
                process(trivial, os.environ, folder / f"{name}.log")
            ).pid
        peer = mlserver if isinstance(mlserver, MLServerPeer) else None
        if peer is not None:
            started = running.enter_context(process(peer.command, os.environ, folder / "ml.log"))
            addresses |= {UNBATCHED: peer.address, BATCHED: peer.address}
            pids |= {UNBATCHED: started.pid, BATCHED: started.pid}
        for name in WORKERS:
            wait_serving(addresses[name])
        wait_port(addresses[TRIVIAL])
        wait_port(addresses[TRIVIAL_ASYNCIO])
        if peer is not None:
            check_mlserver(peer, addresses[SERVICE], say)
        yield Peers(addresses, pids, peer, health_ports)


def e2e_service(folder: Path, broker: KafkaBroker) -> Callable[[str, str], ChildProcess]:
    """Starts another inference service, on the end-to-end case's topic, once it serves."""

    def start(topic: str, address: str) -> ChildProcess:
        env = service_env(folder, address, broker.bootstrap_servers) | {
            "STUDENTPERF_KAFKA_TOPIC": topic,
            "STUDENTPERF_SPOOL_DIR": str(folder / "e2e-spool"),
        }
        child = ChildProcess(
            [sys.executable, "-m", "inference_service"],
            env=env,
            log_path=folder / "e2e-service.log",
        )
        child.start()
        try:
            wait_serving(address)
        except BaseException:
            child.kill()
            raise
        return child

    return start
