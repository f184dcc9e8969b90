"""`pip install studentperf` without extras, as a backend team would: a fresh venv gets the typed
client and the contract only, calls the real inference service with it, and importing a
process's package there names the extra to install instead of failing on a bare missing module.

The project is copied out of the checkout first (pip builds in the source tree, and the build
folders must not land in the repository); pip uses its usual cache and PyPI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from inference_service.server import RunningServer
from studentperf.extras import MODULES_OF_EXTRA
from tests.integration.helpers import count_rows, eventually

pytestmark = pytest.mark.usefixtures("recorder")

ROOT = Path(__file__).resolve().parents[2]
# What `pip install .` needs: the project file and its packages.
SOURCES = ("pyproject.toml", "studentperf", "inference_service", "recorder_service", "trainer")
# What the client may install: grpc, protobuf and the google.rpc messages, and their needs.
CLIENT_DISTRIBUTIONS = {"grpcio", "protobuf", "googleapis-common-protos", "typing-extensions"}
# Any of these in the client's venv or imported by the client is a role's library leaking in.
ROLE_MODULES = sorted({name for names in MODULES_OF_EXTRA.values() for name in names})

CLIENT_CALL = """
import json, sys
from studentperf.client import StudentInput, connect

with connect(sys.argv[1]) as client:
    answer = client.predict(StudentInput("installed-1", age=16, previous_gpa=3.1), top_factors=1)
    info = client.model_info()
roles = sorted(set(json.loads(sys.argv[2])) & {name.split(".")[0] for name in sys.modules})
print(json.dumps({
    "prediction_id": answer.prediction.prediction_id,
    "score": answer.prediction.predicted_final_score,
    "model_version": info.model_version,
    "role_modules_imported": roles,
}))
"""


async def run(args: Sequence[str | Path], cwd: Path) -> tuple[int, str, str]:
    """A child process, awaited: the server under test answers on this event loop."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    child = await asyncio.create_subprocess_exec(
        *map(str, args),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 600)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
async def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding `pip install <project>` with no extras; its folder is the cwd of
    every child, so the checkout is never on their import path."""
    root = tmp_path_factory.mktemp("client-install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    code, _, err = await run([sys.executable, "-m", "venv", root / "venv"], root)
    assert code == 0, err
    code, out, err = await run([root / "venv/bin/python", "-m", "pip", "install", source], root)
    assert code == 0, out + err
    print(f"\n$ pip install studentperf (no extras)\n{out.splitlines()[-1]}")
    return root / "venv"


async def test_only_the_client_and_the_contract_are_installed(client_venv: Path) -> None:
    code, out, err = await run(
        [client_venv / "bin/python", "-m", "pip", "list", "--format=json"], client_venv
    )
    assert code == 0, err
    installed = {item["name"].lower().replace("_", "-") for item in json.loads(out)}
    besides_pip = installed - {"pip", "setuptools", "studentperf"}
    print(f"installed beside pip: {sorted(besides_pip)}")
    assert besides_pip <= CLIENT_DISTRIBUTIONS
    assert {"grpcio", "protobuf", "googleapis-common-protos"} <= besides_pip
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    code, out, err = await run(
        [client_venv / "bin/python", "-c", probe, *ROLE_MODULES], client_venv
    )
    assert code == 0, err
    assert out.strip() == "[]", f"role libraries importable in the client's venv: {out}"


async def test_the_installed_client_calls_the_real_service(
    client_venv: Path, inference: RunningServer, db: asyncpg.Pool
) -> None:
    code, out, err = await run(
        [
            client_venv / "bin/python",
            "-c",
            CLIENT_CALL,
            f"127.0.0.1:{inference.port}",
            json.dumps(ROLE_MODULES),
        ],
        client_venv,
    )
    assert code == 0, err
    answer = json.loads(out)
    print(f"installed client's answer: {answer}")
    assert 0 <= answer["score"] <= 100
    assert answer["model_version"]
    assert answer["role_modules_imported"] == []
    recorded = await eventually(
        count_rows(
            db,
            "SELECT count(*) FROM predictions WHERE prediction_id = $1 AND student_id = $2",
            uuid.UUID(answer["prediction_id"]),
            "installed-1",
        ),
        1,
    )
    assert recorded == 1


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("inference_service.server", "server"),
        ("recorder_service.service", "recorder"),
        ("trainer.train", "trainer"),
        ("trainer.monitor", "trainer"),
    ],
)
async def test_importing_a_process_names_the_extra_to_install(
    client_venv: Path, module: str, extra: str
) -> None:
    code, _, err = await run([client_venv / "bin/python", "-c", f"import {module}"], client_venv)
    last = err.strip().splitlines()[-1]
    print(f"import {module}: exit {code}: {last}")
    assert code == 1
    assert last.startswith("studentperf.extras.MissingExtraError: ")
    assert f"pip install 'studentperf[{extra}]'" in last


async def test_console_scripts_run_the_client_and_refuse_a_missing_role(client_venv: Path) -> None:
    code, out, err = await run([client_venv / "bin/studentperf-erase", "--help"], client_venv)
    assert code == 0 and "usage:" in out, err
    code, _, err = await run([client_venv / "bin/studentperf-serve"], client_venv)
    last = err.strip().splitlines()[-1]
    print(f"studentperf-serve: exit {code}: {last}")
    assert code == 1
    assert "pip install 'studentperf[server]'" in last
    # The rollback is the trainer's side (it moves what the trainer promotes).
    code, _, err = await run([client_venv / "bin/studentperf-rollback"], client_venv)
    last = err.strip().splitlines()[-1]
    print(f"studentperf-rollback: exit {code}: {last}")
    assert code == 1
    assert "pip install 'studentperf[trainer]'" in last
    code, _, err = await run([client_venv / "bin/studentperf-migrate"], client_venv)
    last = err.strip().splitlines()[-1]
    print(f"studentperf-migrate: exit {code}: {last}")
    assert code == 1
    assert last.startswith(
        "studentperf.extras.MissingExtraError: studentperf.migrate needs asyncpg"
    )
    assert "pip install 'studentperf[" in last
