"""The ecosystem's tools, unchanged, by reflection alone: grpcurl and ghz (as `make setup`
installs them) against a real inference service, with no proto file given.

ghz asks reflection for the method's own name (`studentperf.v1.PredictionService.Predict`),
which grpcio-reflection could not resolve; both tools try `grpc.reflection.v1` first. The
server serves v1 and v1alpha (inference_service/reflection.py); a raw call of each proves that
both answer, since a tool falls back silently.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

from inference_service.server import RunningServer
from tests.integration.conftest import REPO, Stack, inference_settings, serving

GRPCURL = REPO / ".local" / "bin" / "grpcurl"
GHZ = REPO / ".local" / "bin" / "ghz"
SERVICE = "studentperf.v1.PredictionService"
PREDICT = f"{SERVICE}.Predict"
TOKEN = "reflection-token-0123456789abcdef"
REQUEST = json.dumps(
    {
        "student": {
            "profile": {"student_id": "ghz-1", "age": 16},
            "academic_record": {"previous_gpa": 3.1, "attendance_percentage": 90},
        }
    }
)
CALLS = 20


async def run(*command: str | Path) -> tuple[int, str, str]:
    # A child process, awaited: the server under test runs on this very event loop.
    process = await asyncio.create_subprocess_exec(
        *map(str, command), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
async def token_server(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    """A server with a token table: reflection needs a valid token there."""
    settings = inference_settings(
        stack, tmp_path_factory.mktemp("spool"), auth_tokens=f"bench {TOKEN} *\n"
    )
    async for running in serving(settings):
        yield running


def test_the_tools_are_installed_by_the_project() -> None:
    assert GRPCURL.is_file() and GHZ.is_file(), "run `make setup` (infra/setup.sh)"


async def test_grpcurl_lists_and_describes_by_reflection(inference: RunningServer) -> None:
    address = f"127.0.0.1:{inference.port}"
    status, out, err = await run(GRPCURL, "-plaintext", address, "list")
    assert status == 0, err
    assert set(out.split()) == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    # Every listed service, described: the v1 reflection service needs its own descriptor.
    status, out, err = await run(GRPCURL, "-plaintext", address, "describe")
    assert status == 0, err
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in out
    assert "rpc Predict ( .studentperf.v1.PredictRequest )" in out
    # A method by its own name: what ghz asks for.
    status, out, err = await run(GRPCURL, "-plaintext", address, "describe", PREDICT)
    assert status == 0, err
    assert f"{PREDICT} is a method" in out


async def ghz(address: str, *options: str) -> dict[str, object]:
    status, out, err = await run(
        GHZ, "--insecure", "--call", PREDICT, "-d", REQUEST, "-n", str(CALLS), "-c", "2",
        "--format", "json", *options, address,
    )  # fmt: skip
    assert status == 0, f"ghz failed: {err or out}"
    report: dict[str, object] = json.loads(out)
    print(
        f"ghz by reflection: count={report['count']}"
        f" status={report.get('statusCodeDistribution')}"
        f" errors={report.get('errorDistribution')}"
    )
    return report


async def test_ghz_calls_predict_by_reflection_without_errors(inference: RunningServer) -> None:
    report = await ghz(f"127.0.0.1:{inference.port}")
    assert report["count"] == CALLS
    assert report["statusCodeDistribution"] == {"OK": CALLS}
    assert not report.get("errorDistribution")


async def test_ghz_by_reflection_with_a_token(token_server: RunningServer) -> None:
    address = f"127.0.0.1:{token_server.port}"
    token = json.dumps({"authorization": f"Bearer {TOKEN}"})
    # ghz sends --metadata with the calls and --reflect-metadata with reflection's.
    report = await ghz(address, "--metadata", token, "--reflect-metadata", token)
    assert report["statusCodeDistribution"] == {"OK": CALLS}
    # Without the token reflection itself refuses, so ghz cannot even find the method.
    status, out, err = await run(
        GHZ, "--insecure", "--call", PREDICT, "-d", REQUEST, "-n", "1", address
    )
    assert status != 0 and "Unauthenticated" in err + out, err + out


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_each_reflection_version_resolves_a_method_name(
    inference: RunningServer, version: str
) -> None:
    # The two versions' messages are the same on the wire, so v1alpha's classes read v1's.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{inference.port}") as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=v1alpha.ServerReflectionRequest.SerializeToString,
            response_deserializer=v1alpha.ServerReflectionResponse.FromString,
        )
        requests = [
            v1alpha.ServerReflectionRequest(file_containing_symbol=PREDICT),
            v1alpha.ServerReflectionRequest(file_containing_symbol=f"{SERVICE}.NoSuchMethod"),
        ]
        answers = [answer async for answer in call(iter(requests), timeout=30)]
    found, missing = answers
    names = set()
    for serialized in found.file_descriptor_response.file_descriptor_proto:
        names.add(descriptor_pb2.FileDescriptorProto.FromString(serialized).name)
    assert "studentperf/v1/prediction_service.proto" in names
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
