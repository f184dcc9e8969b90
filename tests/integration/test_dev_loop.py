"""The developer's loop as a user types it: `make up`, then in a second terminal `make demo`,
`make train` with its variables, `make import CSV=`, `make migrate`, and `make clean` before and
after Ctrl-C.

It runs in a copy of the repository under the test's temporary folder, with ports of its own
(STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS, STUDENTPERF_POSTGRES_PORT, STUDENTPERF_LISTEN_ADDRESS), so
the user's stack, `.local/` and `models/` are never touched. The copy shares the installed tools
(.venv, the Kafka jars, .local/bin) through links: `make setup` finds them installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from infra.devstack import free_port, port_open
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests import kaggle_csv
from tests.integration.helpers import student

ROOT = Path(__file__).resolve().parents[2]
STATE_DIRS = (".local/kafka/state", ".local/kafka/cluster", ".local/postgres", ".local/inference")
# What the user may have set for their own stack, or make for its caller; none of it may leak in.
STAMPS = (
    (".venv/.installed", "pyproject.toml"),
    (".venv/.installed", "requirements/dev.lock"),
    (".local/kafka/libs/.installed", "infra/kafka/pom.xml"),
)
LEFT_OUT = ("PASS_MARK", "CSV", "FORCE", "ROWS", "SEED", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")


def copy_of_repository(dest: Path) -> Path:
    """The tracked files as they are on disk (with their times, which `make setup`'s stamps are
    compared with), and links to the installed tools."""
    # Were a stamp older than its file, make setup in the copy would reinstall into the shared
    # .venv (pointing it at the copy) or replace the shared jars.
    for stamp, stamped in STAMPS:
        assert (ROOT / stamp).stat().st_mtime > (ROOT / stamped).stat().st_mtime, (
            f"{stamp} is older than {stamped}: run make setup first"
        )
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.exists() or source.is_symlink():  # a tracked file deleted on disk stays out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    (dest / ".local" / "kafka").mkdir(parents=True)
    (dest / ".local" / "kafka" / "libs").symlink_to(ROOT / ".local" / "kafka" / "libs")
    (dest / ".local" / "bin").symlink_to(ROOT / ".local" / "bin")
    return dest


def two_free_ports() -> int:
    """A port whose next one is free too: the broker's client and controller ports."""
    while True:
        port = free_port()
        if port < 65535 and not port_open("127.0.0.1", port + 1):
            return port


class Terminal:
    """`make up` in the foreground of a terminal of its own: output collected, Ctrl-C sendable."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            ["make", "up"],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"make up never printed {text!r}:\n{self.output}")
            time.sleep(0.2)

    def ctrl_c(self, timeout: float = 120) -> int:
        """SIGINT to the foreground group, as a terminal sends it; returns make's status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code


def make(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["make", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    print(f"$ make {' '.join(args)}  (exit {done.returncode})\n{done.stdout}{done.stderr}")
    return done


def query(dsn: str, sql: str, *args: object) -> object:
    async def fetch() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def eventually(probe: Callable[[], object], expected: object, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def served_version(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        info = stub.GetModelInfo(api.GetModelInfoRequest(), timeout=10)
        return str(info.model_version)


def current(repo: Path) -> str:
    return (repo / "models" / "current").readlink().name


def users_state() -> dict[str, int | None]:
    """When the repository's own state folders and models/current last changed."""
    paths = [ROOT / d for d in STATE_DIRS] + [ROOT / "models" / "current"]
    return {str(p): p.lstat().st_mtime_ns if p.is_symlink() or p.exists() else None for p in paths}


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    before = users_state()
    yield copy_of_repository(tmp_path / "repo")
    assert users_state() == before


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STUDENTPERF_") and k not in LEFT_OUT
    }
    return kept | {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{two_free_ports()}",
        "STUDENTPERF_POSTGRES_PORT": str(free_port()),
        "STUDENTPERF_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
    }


@pytest.fixture
def terminal(repo: Path, env: dict[str, str]) -> Iterator[Terminal]:
    up = Terminal(repo, env)
    try:
        yield up
    finally:
        if up.process.poll() is None:
            up.ctrl_c()
        print(f"$ make up\n{up.output}")


def test_the_developers_loop(
    repo: Path, env: dict[str, str], terminal: Terminal, tmp_path: Path
) -> None:
    address = env["STUDENTPERF_LISTEN_ADDRESS"]
    owner = f"postgresql://postgres@127.0.0.1:{env['STUDENTPERF_POSTGRES_PORT']}/studentperf"

    # make up: trains a model (there is none in a fresh clone), then serves.
    terminal.wait_for("[up] ready", timeout=600)
    assert "training one" in terminal.output
    with grpc.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        answer = stub.Predict(
            api.PredictRequest(student=student("loop-1", previous_gpa=3)), timeout=10
        )
    assert answer.prediction.prediction_id and answer.prediction.model_version == current(repo)

    # make demo: its predictions are answered, and recorded by the stack's recorder.
    demo = make(repo, env, "demo")
    assert demo.returncode == 0
    assert "22 of 22 predictions recorded" in demo.stdout
    ids = re.findall(r"\bid ([0-9a-f-]{36})$", demo.stdout, re.MULTILINE)
    assert len(ids) == 3
    sql = "SELECT count(*) FROM predictions WHERE prediction_id = ANY($1)"
    assert query(owner, sql, [uuid.UUID(i) for i in ids]) == 3

    # make clean while the stack runs: refused, nothing removed.
    refused = make(repo, env, "clean")
    assert refused.returncode != 0 and "refused" in refused.stderr
    assert all((repo / d).exists() for d in (".local/kafka/state", ".local/postgres"))

    # make migrate: the stack's database is up to date, and stays so; a new database gets every
    # migration once, and nothing the second time.
    migrations = len(list((repo / "studentperf" / "migrations").glob("*.sql")))
    for _ in range(2):
        migrated = make(repo, env, "migrate")
        assert migrated.returncode == 0 and "is up to date" in migrated.stdout
    assert query(owner, "SELECT count(*) FROM schema_migrations") == migrations
    query(owner, "CREATE DATABASE scratch")
    scratch = owner.replace("/studentperf", "/scratch")
    env_scratch = env | {"STUDENTPERF_DATABASE_URL": scratch}
    first = make(repo, env_scratch, "migrate")
    second = make(repo, env_scratch, "migrate")
    assert first.returncode == 0 and f"applied {migrations} migration(s)" in first.stdout
    assert second.returncode == 0 and "is up to date" in second.stdout
    assert query(scratch, "SELECT count(*) FROM schema_migrations") == migrations

    # make train: a small model is worse than the served one, so the gate refuses it...
    served = current(repo)
    refused_train = make(repo, env, "train", "ROWS=200", "SEED=7")
    assert refused_train.returncode == 0 and "NOT promoted" in refused_train.stdout
    assert current(repo) == served
    # ... and FORCE=1 promotes it; the service reloads it.
    forced = make(repo, env, "train", "ROWS=200", "SEED=7", "FORCE=1")
    assert forced.returncode == 0 and "but forced: promoted" in forced.stdout
    assert current(repo) != served
    assert eventually(lambda: served_version(address), current(repo), timeout=60) == current(repo)

    # PASS_MARK= trains for another pass mark: labels, the saved model, the gate's reason.
    marked = make(repo, env, "train", "ROWS=200", "PASS_MARK=60")
    assert marked.returncode == 0
    assert "below the pass mark 60" in marked.stdout
    assert "not 60, so not comparable: promoted" in marked.stdout
    metadata = json.loads((repo / "models" / "current" / "metadata.json").read_text())
    assert metadata["pass_mark"] == 60

    # make import CSV=: the file's students and outcomes land in the database.
    rows = 40
    path = kaggle_csv.write(tmp_path / "exams.csv", kaggle_csv.kaggle_rows(rows, seed=3))
    imported = make(repo, env, "import", f"CSV={path}", "TERM_ID=2025-loop")
    assert imported.returncode == 0
    outcomes = lambda: query(owner, "SELECT count(*) FROM outcomes WHERE term = '2025-loop'")  # noqa: E731
    assert eventually(outcomes, rows, timeout=60) == rows

    # Ctrl-C stops the stack; then make clean removes its data and keeps models/ and the tools.
    terminal.ctrl_c()
    assert "[up] stopping" in terminal.output
    cleaned = make(repo, env, "clean")
    assert cleaned.returncode == 0
    for folder in (".local/kafka/state", ".local/postgres", ".local/inference"):
        assert f"removed {folder}" in cleaned.stdout
    assert not any((repo / d).exists() for d in STATE_DIRS)
    assert (repo / "models" / "current").exists() and (repo / ".local" / "bin").exists()
    again = make(repo, env, "clean")
    assert again.returncode == 0 and "nothing to remove" in again.stdout
