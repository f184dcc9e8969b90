"""TLS, mutual TLS and bearer tokens on a real server, with certificates made by the test;
and no secret in any log line of the real service processes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from infra.devstack import PostgresServer
from studentperf.config import SharedSettings
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack
from tests.integration.helpers import student
from tests.integration.service_stack import ServicePair


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return key, cert


def make_cert(folder: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return key, cert


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]
    rogue_client: tuple[Path, Path]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca = make_ca(folder, "test-ca")
    rogue_ca = make_ca(folder, "rogue-ca")
    return Certs(
        ca=ca[1],
        server=make_cert(folder, "server", ca, "IP:127.0.0.1,DNS:localhost"),
        client=make_cert(folder, "school-client", ca, "DNS:school.example"),
        rogue_client=make_cert(folder, "rogue-client", rogue_ca, "DNS:rogue.example"),
    )


async def serve(stack: Stack, tmp_path: Path, **security: str) -> RunningServer:
    return await start_server(
        InferenceSettings(
            shared=stack.shared,
            listen_address="127.0.0.1:0",
            models_dir=str(stack.model_path),
            spool_dir=str(tmp_path / "spool"),
            **security,  # type: ignore[arg-type]
        )
    )


def tls_channel(
    port: int, certs: Certs, client: tuple[Path, Path] | None = None
) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=client[0].read_bytes() if client else None,
        certificate_chain=client[1].read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


async def predict(channel: grpc.aio.Channel, token: str | None = None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    try:
        await api_grpc.PredictionServiceStub(channel).Predict(
            api.PredictRequest(student=student("sec-1")), timeout=5, metadata=metadata
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_tls_serves_trusting_clients_only(stack: Stack, certs: Certs, tmp_path: Path) -> None:
    running = await serve(
        stack, tmp_path, tls_cert_file=str(certs.server[1]), tls_key_file=str(certs.server[0])
    )
    try:
        async with tls_channel(running.port, certs) as channel:
            assert await predict(channel) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as plain:
            assert await predict(plain) == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(1)


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    stack: Stack, certs: Certs, tmp_path: Path
) -> None:
    running = await serve(
        stack,
        tmp_path,
        tls_cert_file=str(certs.server[1]),
        tls_key_file=str(certs.server[0]),
        tls_client_ca_file=str(certs.ca),
    )
    try:
        async with tls_channel(running.port, certs, certs.client) as channel:
            assert await predict(channel) == grpc.StatusCode.OK
        async with tls_channel(running.port, certs) as no_cert:
            assert await predict(no_cert) == grpc.StatusCode.UNAVAILABLE
        async with tls_channel(running.port, certs, certs.rogue_client) as rogue:
            assert await predict(rogue) == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(1)


FULL_TOKEN = "full-access-token-0123456789"
INFO_TOKEN = "read-only-token-0123456789"
TOKENS = f"school-a {FULL_TOKEN} *\ndashboard {INFO_TOKEN} GetModelInfo\n"


async def test_bearer_tokens_authenticate_and_grant_methods(stack: Stack, tmp_path: Path) -> None:
    running = await serve(stack, tmp_path, auth_tokens=TOKENS)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert await predict(channel) == grpc.StatusCode.UNAUTHENTICATED
            assert await predict(channel, "not-a-token-at-all") == grpc.StatusCode.UNAUTHENTICATED
            assert await predict(channel, INFO_TOKEN) == grpc.StatusCode.PERMISSION_DENIED
            assert await predict(channel, FULL_TOKEN) == grpc.StatusCode.OK
            info = await api_grpc.PredictionServiceStub(channel).GetModelInfo(
                api.GetModelInfoRequest(),
                timeout=5,
                metadata=(("authorization", f"Bearer {INFO_TOKEN}"),),
            )
            assert info.model_version
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        # Refused calls never reach the servicer; they are counted all the same.
        assert running.status is not None
        calls = {
            (s.labels["method"], s.labels["code"]): s.value
            for family in text_string_to_metric_families(running.status.metrics())
            for s in family.samples
            if s.name == "studentperf_inference_rpc_duration_seconds_count"
        }
        assert calls == {
            ("Predict", "UNAUTHENTICATED"): 2,
            ("Predict", "PERMISSION_DENIED"): 1,
            ("Predict", "OK"): 1,
            ("GetModelInfo", "OK"): 1,
        }
    finally:
        await running.stop(1)


async def test_no_secret_reaches_the_logs(
    stack: Stack, postgres: PostgresServer, tmp_path: Path
) -> None:
    # Trust authentication accepts any password, so a real-looking one costs nothing here.
    password = "db-pass-Zq8w1x"
    database_url = postgres.dsn(stack.database_url.rsplit("/", 1)[1]).replace(
        "postgres@", f"postgres:{password}@"
    )
    (tmp_path / "tokens").write_text(TOKENS)
    shared = SharedSettings(stack.shared.kafka_bootstrap_servers, stack.topic)
    env = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": shared.kafka_bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": shared.kafka_topic,
        "STUDENTPERF_DATABASE_URL": database_url,
        "STUDENTPERF_LOG_LEVEL": "DEBUG",
    }
    services = ServicePair.configure(
        env,
        stack.model_path,
        tmp_path,
        STUDENTPERF_AUTH_TOKENS_FILE=str(tmp_path / "tokens"),
    )
    try:
        await services.start()
        async with grpc.aio.insecure_channel(services.address) as channel:
            assert await predict(channel, FULL_TOKEN) == grpc.StatusCode.OK
            assert await predict(channel, INFO_TOKEN) == grpc.StatusCode.PERMISSION_DENIED
            assert await predict(channel, "wrong-token-wrong-token") == (
                grpc.StatusCode.UNAUTHENTICATED
            )
    finally:
        await services.stop()
    inference, recorder = services.inference, services.recorder
    logs = inference.log_path.read_text() + recorder.log_path.read_text()
    assert "starting" in logs and "denied Predict to client dashboard" in logs
    for secret in (password, FULL_TOKEN, INFO_TOKEN, "wrong-token-wrong-token"):
        assert secret not in logs
