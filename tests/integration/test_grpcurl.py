"""An operator's view: the README's grpcurl cookbook, every command run as written (by bash,
with grpcurl installed by the project) against real servers, each answer checked.

The commands are read from the README's "grpcurl cookbook" section, so the document cannot
drift from what the service does: a command added there without a check here fails the test,
and so does a check whose command was removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from inference_service.server import RunningServer, start_server
from inference_service.settings import Settings as InferenceSettings
from tests.integration.conftest import REPO, Stack
from tests.integration.helpers import count_rows, eventually
from tests.integration.test_security import Certs, certs  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("recorder")

GRPCURL = REPO / ".local" / "bin" / "grpcurl"
SERVICE = "studentperf.v1.PredictionService"
TOKEN = "cookbook-token-0123456789abcdef"
PLAIN_ADDRESS = "127.0.0.1:50051"  # as the README writes them
TLS_ADDRESS = "localhost:50051"


def cookbook_commands(readme: str) -> list[str]:
    """The shell commands of the section's ```sh blocks, each with its continuation lines."""
    section = readme.split("\n## grpcurl cookbook\n", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL):
        pending = ""
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending += line + "\n"
            if line.endswith("\\"):
                continue
            try:
                shlex.split(pending)  # unbalanced quotes: the command goes on
            except ValueError:
                continue
            commands.append(pending.strip())
            pending = ""
        assert not pending, f"unfinished command in the cookbook: {pending}"
    return commands


@dataclass
class Answer:
    status: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        assert self.status == 0, self.err
        parsed: dict[str, object] = json.loads(self.out)
        return parsed


Check = Callable[[Answer], None]


def check_list(answer: Answer) -> None:
    assert answer.status == 0, answer.err
    assert {SERVICE, "grpc.health.v1.Health"} <= set(answer.out.split())


def check_describe_service(answer: Answer) -> None:
    assert answer.status == 0, answer.err
    for method in ("Predict", "BatchPredict", "GetModelInfo", "RecordOutcomes"):
        assert f"rpc {method}" in answer.out


def check_describe_profile(answer: Answer) -> None:
    assert answer.status == 0, answer.err
    assert "student_id" in answer.out and "optional int32 age" in answer.out


def check_template(answer: Answer) -> None:
    assert answer.status == 0, answer.err
    template = json.loads(answer.out.split("Message template:", 1)[1])
    assert "student_id" in template["student"]["profile"]
    assert "top_factors" in template


def check_predict(answer: Answer) -> None:
    prediction = answer.json()["prediction"]
    assert isinstance(prediction, dict)
    uuid.UUID(prediction["prediction_id"])
    assert 0 <= prediction["predicted_final_score"] <= 100
    assert "explanation" not in prediction


def check_explained(answer: Answer) -> None:
    explanation = answer.json()["prediction"]["explanation"]  # type: ignore[index]
    assert len(explanation["top_factors"]) == 3


def check_batch(answer: Answer) -> None:
    results: list[dict[str, Any]] = answer.json()["results"]  # type: ignore[assignment]
    first, second = results
    assert "prediction" in first
    violations = second["error"]["bad_request"]["field_violations"]
    assert [v["field"] for v in violations] == ["students[1].profile.age"]


def check_outcomes(answer: Answer) -> None:
    results: list[dict[str, Any]] = answer.json()["results"]  # type: ignore[assignment]
    first, second = results
    assert "stored" in first
    assert second["error"]["bad_request"]["field_violations"][0]["field"] == "outcomes[1].term"


def check_history(answer: Answer) -> None:
    # The cookbook's range (March 2026) holds none of the predictions the test just made, and
    # the student exists (its Predict was stored first): an empty page, not NOT_FOUND.
    assert answer.status == 0, answer.err
    page = answer.json()
    assert "next_page_token" not in page and page.get("predictions", []) == [], page


def check_erase(answer: Answer) -> None:
    # Confirmed or not depends on how fast the recorder is: either way an id and a summary.
    found = answer.json()
    assert uuid.UUID(str(found["erasure_id"])) and found["summary"], found


def check_model_info(answer: Answer) -> None:
    info = answer.json()
    assert info["model_version"] and "score_rmse" in info["metrics"]  # type: ignore[operator]


def check_serving(answer: Answer) -> None:
    assert answer.json() == {"status": "SERVING"}


def check_error_details(answer: Answer) -> None:
    assert answer.status == 64 + 3, answer.err  # grpcurl: 64 + INVALID_ARGUMENT
    status = json.loads(answer.err)
    assert status["code"] == 3
    [detail] = status["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    fields = {v["field"] for v in detail["field_violations"]}
    assert fields == {"student.profile.student_id", "student.profile.age"}


# Each command of the cookbook matches exactly one pattern; each pattern at least one command.
CHECKS: list[tuple[str, Check]] = [
    (r" list$", check_list),
    (r"describe studentperf\.v1\.PredictionService$", check_describe_service),
    (r"describe studentperf\.v1\.StudentProfile$", check_describe_profile),
    (r"-msg-template .* describe studentperf\.v1\.PredictRequest$", check_template),
    (r"^(?!.*(top_factors|format-error)).*/Predict$", check_predict),
    (r"top_factors.*/Predict$", check_explained),
    (r"/BatchPredict$", check_batch),
    (r"/RecordOutcomes$", check_outcomes),
    (r"/ListStudentPredictions$", check_history),
    (r"/EraseStudent$", check_erase),
    (r"/GetModelInfo$", check_model_info),
    (r"grpc\.health\.v1\.Health/Check$", check_serving),
    (r"-format-error .*/Predict$", check_error_details),
]


def check_for(command: str) -> Check:
    flat = " ".join(command.replace("\\\n", " ").split())
    matching = [check for pattern, check in CHECKS if re.search(pattern, flat, flags=re.DOTALL)]
    assert len(matching) == 1, f"{len(matching)} checks for cookbook command: {command}"
    return matching[0]


async def run(command: str, cwd: Path, plain_port: int, tls_port: int) -> Answer:
    command = command.replace(PLAIN_ADDRESS, f"127.0.0.1:{plain_port}").replace(
        TLS_ADDRESS, f"localhost:{tls_port}"
    )
    # A child process, awaited: the servers under test run on this very event loop.
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=cwd,
        env={**os.environ, "PATH": f"{GRPCURL.parent}:{os.environ['PATH']}",
             "STUDENTPERF_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Answer(process.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
async def tls_server(
    stack: Stack,
    certs: Certs,  # noqa: F811 (the fixture)
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[RunningServer, Path]]:
    """A server with mutual TLS and a token table, and a folder holding the cookbook's
    ca.pem, client.pem and client.key."""
    folder = tmp_path_factory.mktemp("cookbook")
    shutil.copy(certs.ca, folder / "ca.pem")
    shutil.copy(certs.client[1], folder / "client.pem")
    shutil.copy(certs.client[0], folder / "client.key")
    running = await start_server(
        InferenceSettings(
            shared=stack.shared,
            listen_address="127.0.0.1:0",
            models_dir=str(stack.model_path),
            spool_dir=str(folder / "spool"),
            tls_cert_file=str(certs.server[1]),
            tls_key_file=str(certs.server[0]),
            tls_client_ca_file=str(certs.ca),
            auth_tokens=f"operator {TOKEN} *\n",
        )
    )
    yield running, folder
    await running.stop(grace_s=1)


def test_grpcurl_is_installed_by_the_project() -> None:
    assert GRPCURL.is_file(), "run `make setup` (infra/setup.sh installs grpcurl)"


def test_the_cookbook_covers_every_method_tls_tokens_and_error_details() -> None:
    commands = cookbook_commands((REPO / "README.md").read_text())
    used = {check_for(command) for command in commands}
    assert used == {check for _, check in CHECKS}, "a check whose command left the cookbook"
    text = "\n".join(commands)
    for needed in ("-cacert", "-cert", "authorization: Bearer $STUDENTPERF_TOKEN"):
        assert needed in text


async def test_every_cookbook_command_works_as_written(
    inference: RunningServer, tls_server: tuple[RunningServer, Path], db: asyncpg.Pool
) -> None:
    tls, folder = tls_server
    commands = cookbook_commands((REPO / "README.md").read_text())
    for command in commands:
        answer = await run(command, folder, inference.port, tls.port)
        try:
            check_for(command)(answer)
        except AssertionError as failure:
            raise AssertionError(f"{command}\n-> {answer}") from failure
        if check_for(command) is check_predict and PLAIN_ADDRESS in command:
            pid = uuid.UUID(answer.json()["prediction"]["prediction_id"])  # type: ignore[index]
            probe = count_rows(db, "SELECT count(*) FROM predictions WHERE prediction_id = $1", pid)
            assert await eventually(probe, 1, timeout=20) == 1


async def test_without_the_token_the_tls_server_refuses(
    tls_server: tuple[RunningServer, Path],
) -> None:
    tls, folder = tls_server
    answer = await run(
        f"grpcurl -cacert ca.pem -cert client.pem -key client.key {TLS_ADDRESS} "
        f"{SERVICE}/GetModelInfo",
        folder, 0, tls.port,
    )  # fmt: skip
    assert answer.status != 0 and "Unauthenticated" in answer.err, answer
