"""An operator's view: grpcurl (installed by the project) with no proto file at hand."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from inference_service.server import RunningServer
from tests.integration.conftest import REPO
from tests.integration.helpers import count_rows, eventually

pytestmark = pytest.mark.usefixtures("recorder")

GRPCURL = REPO / ".local" / "bin" / "grpcurl"
SERVICE = "studentperf.v1.PredictionService"


async def grpcurl(server: RunningServer, *command: str, data: object = None) -> str:
    # A child process, awaited: the server under test runs on this very event loop.
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        *([] if data is None else ["-d", json.dumps(data)]),
        f"127.0.0.1:{server.port}",
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


def test_grpcurl_is_installed_by_the_project() -> None:
    assert GRPCURL.is_file(), "run `make setup` (infra/setup.sh installs grpcurl)"


async def test_list_shows_the_service_health_and_reflection(inference: RunningServer) -> None:
    services = (await grpcurl(inference, "list")).split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services


async def test_describe_shows_the_methods_and_documented_fields(inference: RunningServer) -> None:
    described = await grpcurl(inference, "describe", SERVICE)
    for method in ("Predict", "BatchPredict", "GetModelInfo"):
        assert f"rpc {method}" in described
    profile = await grpcurl(inference, "describe", "studentperf.v1.StudentProfile")
    assert "student_id" in profile and "optional int32 age" in profile


async def test_health_check_says_serving(inference: RunningServer) -> None:
    answer = json.loads(await grpcurl(inference, "grpc.health.v1.Health/Check"))
    assert answer == {"status": "SERVING"}


async def test_predict_through_grpcurl_is_answered_and_recorded(
    inference: RunningServer, db: asyncpg.Pool
) -> None:
    request = {
        "student": {
            "profile": {"student_id": "grpcurl-1", "age": 15, "gender": "GENDER_MALE"},
            "academic_record": {"attendance_percentage": 80, "previous_gpa": 2.9},
        }
    }
    out = await grpcurl(inference, f"{SERVICE}/Predict", data=request)
    prediction = json.loads(out)["prediction"]
    assert 0 <= prediction["predicted_final_score"] <= 100
    pid = uuid.UUID(prediction["prediction_id"])
    probe = count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = $1", pid)
    assert await eventually(probe, 1, timeout=10) == 1
