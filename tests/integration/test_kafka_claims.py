"""README claims about the services and Kafka, on a broker of this module's own: it is stopped
mid-test (stopping the session's would stall every other module), and it has a SASL listener.

- The spool's order: events spooled while Kafka is away reach the topic, per student key, in
  the order their calls were accepted, and calls made while the spool drains queue behind it.
- The Kafka SASL password never appears in the services' logs, at DEBUG, whether the broker
  accepts it or refuses a wrong one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from inference_service.server import start_server
from inference_service.settings import Settings as InferenceSettings
from infra.devstack import KafkaBroker, PostgresServer, free_port
from infra.up import wait_serving
from studentperf.config import SharedSettings
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from tests.integration.conftest import fresh_topic_and_database
from tests.integration.helpers import student, topic_size
from tests.integration.processes import ServiceProcess

SASL_USER = "school-a"
SASL_PASSWORD = "sasl-pass-Zq8w1x-0123456789"
WRONG_PASSWORD = "wrong-sasl-Kp4v9y-0123456789"
REFUSAL = "SaslAuthenticationFailed"  # what aiokafka logs when the broker refuses the password
# Students whose calls run one after another, each in a loop of its own, all at once.
STUDENTS = 6
# Events in the spool before the broker comes back, and calls sent to Kafka after it drained.
SPOOLED_BEFORE_RETURN = 300
DIRECT_AFTER_DRAIN = 120


class SaslBroker(KafkaBroker):
    """A broker with a SASL_PLAINTEXT listener (PLAIN, one user) beside its PLAINTEXT one."""

    def __init__(self, state_dir: Path) -> None:
        self.sasl_port = free_port()
        port, controller = free_port(), free_port()
        host = "127.0.0.1"
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{SASL_USER}="{SASL_PASSWORD}";'
        )
        super().__init__(
            state_dir,
            port=port,
            controller_port=controller,
            extra_properties={
                "listeners": (
                    f"PLAINTEXT://{host}:{port},SASL_PLAINTEXT://{host}:{self.sasl_port},"
                    f"CONTROLLER://{host}:{controller}"
                ),
                "advertised.listeners": (
                    f"PLAINTEXT://{host}:{port},SASL_PLAINTEXT://{host}:{self.sasl_port}"
                ),
                "listener.security.protocol.map": (
                    "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
                ),
                "sasl.enabled.mechanisms": "PLAIN",
                "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
            },
        )

    @property
    def sasl_bootstrap_servers(self) -> str:
        return f"{self.host}:{self.sasl_port}"


@pytest.fixture(scope="module")
async def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SaslBroker]:
    broker = SaslBroker(tmp_path_factory.mktemp("own-kafka"))
    await broker.start_and_wait(timeout=120)
    yield broker
    broker.stop()


async def events_per_key(bootstrap: str, topic: str) -> dict[str, list[str]]:
    """Each key's event ids in the order the topic holds them (one key, one partition)."""
    total = await topic_size(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: dict[str, list[str]] = defaultdict(list)
    read = 0
    try:
        async with asyncio.timeout(60):
            while read < total:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for record in records:
                        assert record.key is not None
                        event = PredictionEvent.FromString(record.value)
                        found[record.key.decode()].append(event.event_id)
                        read += 1
    finally:
        await consumer.stop()
    return found


def first_copies(ids: list[str]) -> list[str]:
    """The ids in order of their first appearance: a spooled event may be in the topic twice."""
    return list(dict.fromkeys(ids))


async def test_events_spooled_while_kafka_is_away_reach_the_topic_in_accepted_order(
    own_kafka: SaslBroker, postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> None:
    topic = await fresh_topic_and_database(own_kafka, postgres, "order")
    own_kafka.stop()
    settings = InferenceSettings(
        shared=SharedSettings(
            kafka_bootstrap_servers=own_kafka.bootstrap_servers, kafka_topic=topic
        ),
        listen_address="127.0.0.1:0",
        models_dir=str(model_path),
        spool_dir=str(tmp_path / "spool"),
        publish_timeout_s=1.0,
    )
    running = await start_server(settings)
    spool = running.publisher.spool
    accepted: dict[str, list[str]] = {f"order-{n}": [] for n in range(STUDENTS)}
    accepted_directly = 0  # calls answered once the spool had drained
    drained = asyncio.Event()
    stop = asyncio.Event()

    async def caller(stub: api_grpc.PredictionServiceAsyncStub, key: str) -> None:
        nonlocal accepted_directly
        while not stop.is_set():
            request = api.PredictRequest(student=student(key, previous_gpa=len(accepted[key]) % 4))
            answer = await stub.Predict(request, timeout=60)
            accepted[key].append(answer.prediction.prediction_id)
            accepted_directly += drained.is_set()
            await asyncio.sleep(0.02)  # enough calls to interleave, few enough to read back

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            callers = [asyncio.create_task(caller(stub, key)) for key in accepted]
            try:
                async with asyncio.timeout(120):
                    while spool.records < SPOOLED_BEFORE_RETURN:  # noqa: ASYNC110 (polled)
                        await asyncio.sleep(0.05)
                spooled_at_return = spool.records
                # Back, while the calls go on: they queue behind the spool as it drains.
                own_kafka.start()
                await own_kafka.wait_ready(120)
                async with asyncio.timeout(120):
                    while not (running.publisher.kafka_connected and spool.empty):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                drained.set()
                async with asyncio.timeout(120):
                    while accepted_directly < DIRECT_AFTER_DRAIN:  # noqa: ASYNC110 (polled)
                        await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.gather(*callers)
        assert running.status is not None
        spooled = next(
            sample.value
            for family in text_string_to_metric_families(running.status.metrics())
            for sample in family.samples
            if sample.name == "studentperf_inference_spooled_events_total"
        )
    finally:
        await running.stop(grace_s=5)

    in_topic = await events_per_key(own_kafka.bootstrap_servers, topic)
    total = sum(len(ids) for ids in accepted.values())
    copies = sum(len(ids) for ids in in_topic.values())
    print(
        f"\nkafka away, then back: {total} predictions accepted by {STUDENTS} students' "
        f"sequential callers, {spooled:.0f} of them spooled ({spooled_at_return} when the broker "
        f"was restarted), {accepted_directly} sent straight to Kafka after the spool drained; the "
        f"topic holds {copies} "
        f"events ({copies - total} extra copies)"
    )
    assert spooled >= SPOOLED_BEFORE_RETURN and accepted_directly >= DIRECT_AFTER_DRAIN
    assert set(in_topic) == set(accepted)
    for key, ids in accepted.items():
        assert first_copies(in_topic[key]) == ids, f"{key}'s events are out of order"


async def test_the_kafka_sasl_password_stays_out_of_the_logs(
    own_kafka: SaslBroker, postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> None:
    if not own_kafka.running:  # the other test stops it; it restarts it, unless it failed
        await own_kafka.start_and_wait(timeout=120)
    name = await fresh_topic_and_database(own_kafka, postgres, "sasl")
    (tmp_path / "sasl-password").write_text(SASL_PASSWORD + "\n")
    kafka = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": own_kafka.sasl_bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": name,
        "STUDENTPERF_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STUDENTPERF_KAFKA_SASL_MECHANISM": "PLAIN",
        "STUDENTPERF_KAFKA_SASL_USERNAME": SASL_USER,
        "STUDENTPERF_LOG_LEVEL": "DEBUG",
    }

    def inference(password: dict[str, str], log: str) -> tuple[ServiceProcess, str]:
        address = f"127.0.0.1:{free_port()}"
        process = ServiceProcess(
            "inference_service",
            {
                **kafka,
                **password,
                "STUDENTPERF_LISTEN_ADDRESS": address,
                "STUDENTPERF_MODELS_DIR": str(model_path),
                "STUDENTPERF_SPOOL_DIR": str(tmp_path / f"spool-{log}"),
                "STUDENTPERF_PUBLISH_TIMEOUT_S": "10",
            },
            tmp_path / f"{log}.log",
        )
        return process, address

    # The inference service reads the password from a file, the recorder from the environment.
    accepted, address = inference(
        {"STUDENTPERF_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "sasl-password")}, "inference"
    )
    recorder = ServiceProcess(
        "recorder_service",
        {
            **kafka,
            "STUDENTPERF_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
            "STUDENTPERF_DATABASE_URL": postgres.dsn(name),
            "STUDENTPERF_BATCH_MAX_WAIT_MS": "50",
        },
        tmp_path / "recorder.log",
    )
    refused, refused_address = inference(
        {"STUDENTPERF_KAFKA_SASL_PASSWORD": WRONG_PASSWORD}, "refused"
    )
    processes = (accepted, recorder, refused)
    try:
        for process in processes:
            process.start()
        await wait_serving(address)
        await wait_serving(refused_address)
        async with grpc.aio.insecure_channel(address) as channel:
            answer = await api_grpc.PredictionServiceStub(channel).Predict(
                api.PredictRequest(student=student("sasl-1")), timeout=30
            )
        # Recorded: the event went through Kafka on the password, both ways.
        conn = await asyncpg.connect(postgres.dsn(name))
        try:
            async with asyncio.timeout(120):
                while not await conn.fetchval(  # noqa: ASYNC110 (polled)
                    "SELECT count(*) FROM predictions WHERE prediction_id = $1",
                    uuid.UUID(answer.prediction.prediction_id),
                ):
                    await asyncio.sleep(0.2)
        finally:
            await conn.close()
        # The wrong password is presented and refused, and the service says so.
        async with asyncio.timeout(120):
            while REFUSAL not in refused.log_path.read_text():  # noqa: ASYNC110 (polled)
                await asyncio.sleep(0.2)
    finally:
        for process in processes:
            await process.stop_async()
    logs = {p.log_path.name: p.log_path.read_text() for p in processes}
    print(
        "\nlogs at DEBUG: "
        + ", ".join(f"{name} {len(text.splitlines())} lines" for name, text in logs.items())
    )
    refusal = next(line for line in logs["refused.log"].splitlines() if REFUSAL in line)
    print(f"the wrong password's refusal: {refusal[:300]}")
    for name, text in logs.items():
        assert '"level": "DEBUG"' in text or " DEBUG " in text, f"{name} did not log at DEBUG"
        assert SASL_PASSWORD not in text, f"the SASL password is in {name}"
        assert WRONG_PASSWORD not in text, f"the wrong SASL password is in {name}"
