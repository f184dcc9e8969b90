"""Each script in docs/examples, run as a user would, against the real running service."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from tests.integration.conftest import REPO, Stack
from tests.integration.test_security import Certs, certs  # noqa: F401 (a fixture)

EXAMPLES = REPO / "docs" / "examples"
TOKEN = "example-token-0123456789abcdef"


async def run_example(
    script: str, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> tuple[int, str, str]:
    # A child process, awaited: the server under test runs on this very event loop.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / script),
        *args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_predict_one_prints_the_prediction(inference: RunningServer) -> None:
    status, out, err = await run_example(
        "predict_one.py", "--target", f"127.0.0.1:{inference.port}", "--student-id", "ex-1",
        "--age", "16", "--gender", "female", "--previous-gpa", "3.1", "--attendance", "92",
        "--top-factors", "3",
    )  # fmt: skip
    assert status == 0, err
    prediction = json.loads(out)
    uuid.UUID(prediction["prediction_id"])
    assert 0 <= prediction["predicted_final_score"] <= 100
    assert len(prediction["explanation"]["top_factors"]) == 3


async def test_predict_one_prints_the_bad_fields(inference: RunningServer) -> None:
    status, _, err = await run_example(
        "predict_one.py", "--target", f"127.0.0.1:{inference.port}", "--student-id", "ex-2",
        "--age", "5",
    )  # fmt: skip
    assert status == 1
    assert "INVALID_ARGUMENT" in err and "student.profile.age:" in err


async def test_batch_csv_writes_one_row_per_input_line(
    inference: RunningServer, tmp_path: Path
) -> None:
    out_file = tmp_path / "predictions.csv"
    status, out, err = await run_example(
        "batch_csv.py", str(EXAMPLES / "students.csv"), "--out", str(out_file),
        "--target", f"127.0.0.1:{inference.port}", "--batch-size", "2",
    )  # fmt: skip
    assert status == 0, err
    assert "5 rows: 4 predicted, 1 refused" in out
    with out_file.open(newline="") as file:
        rows = list(csv.DictReader(file))
    with (EXAMPLES / "students.csv").open(newline="") as file:
        inputs = list(csv.DictReader(file))
    assert [r["student_id"] for r in rows] == [r["student_id"] for r in inputs]
    assert [r["line"] for r in rows] == ["2", "3", "4", "5", "6"]
    refused = [r for r in rows if r["error"]]
    assert [r["student_id"] for r in refused] == ["s-1004"]
    assert "students[3].profile.age" in refused[0]["error"]  # numbered in the whole file
    for row in rows:
        if not row["error"]:
            uuid.UUID(row["prediction_id"])
            assert 0 <= float(row["predicted_final_score"]) <= 100


async def test_tls_token_example_against_a_mutual_tls_server_with_tokens(
    stack: Stack,
    certs: Certs,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    running = await start_server(
        InferenceSettings(
            shared=stack.shared,
            listen_address="127.0.0.1:0",
            models_dir=str(stack.model_path),
            spool_dir=str(tmp_path / "spool"),
            tls_cert_file=str(certs.server[1]),
            tls_key_file=str(certs.server[0]),
            tls_client_ca_file=str(certs.ca),
            auth_tokens=f"school-a {TOKEN} *\n",
        )
    )
    tls = ["--target", f"localhost:{running.port}", "--ca", str(certs.ca),
           "--cert", str(certs.client[1]), "--key", str(certs.client[0])]  # fmt: skip
    try:
        status, out, err = await run_example("tls_token.py", *tls, env={"STUDENTPERF_TOKEN": TOKEN})
        assert status == 0, err
        assert out.startswith("model ") and "prediction " in out
        status, _, err = await run_example(
            "tls_token.py", *tls, env={"STUDENTPERF_TOKEN": "wrong-token-0123456789"}
        )
        assert status == 1 and "UNAUTHENTICATED" in err
    finally:
        await running.stop(grace_s=1)


@pytest.mark.parametrize("script", ["predict_one.py", "batch_csv.py", "tls_token.py"])
async def test_each_example_explains_itself(script: str) -> None:
    status, out, err = await run_example(script, "--help")
    assert status == 0, err
    assert "usage:" in out
