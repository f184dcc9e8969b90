"""`make clean`, run on a copy of the Makefile in a temporary layout (never the repo's .local).

It removes what the dev stack writes and says so, keeps the installed tools, and refuses while a
process of the stack still uses the data.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What infra/up.py, infra/devstack/ and infra/kafka_cluster.py write: default_kafka(),
# default_kafka_cluster(), default_postgres() and the inference service's spool.
STATE = [".local/kafka/state", ".local/kafka/cluster", ".local/postgres", ".local/inference"]
TOOLS = [".venv/bin/python", ".local/kafka/libs/kafka.jar", ".local/bin/grpcurl", "models/current"]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for folder in STATE:
        (tmp_path / folder / "data").mkdir(parents=True)
        (tmp_path / folder / "data" / "file").write_bytes(b"x" * 4096)
    for tool in TOOLS:
        (tmp_path / tool).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / tool).write_text("tool")
    return tmp_path


def make_clean(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(folder), "clean"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_clean_removes_the_stack_state_says_so_and_keeps_the_tools(layout: Path) -> None:
    done = make_clean(layout)
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    for folder in STATE:
        assert not (layout / folder).exists(), folder
        assert f"removed {folder} (" in done.stdout
    for tool in TOOLS:
        assert (layout / tool).read_text() == "tool", tool

    again = make_clean(layout)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_clean_refuses_while_the_stack_runs_on_the_data(layout: Path) -> None:
    # Stands in for the postmaster: it names its data folder on its command line (-D).
    postmaster = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdin.read()",
            str(layout / ".local/postgres/data"),
        ],
        stdin=subprocess.PIPE,
    )
    try:
        done = make_clean(layout)
    finally:
        postmaster.communicate(timeout=30)
    assert done.returncode != 0
    assert f"pid {postmaster.pid}" in done.stderr and "stop it first" in done.stderr
    for folder in STATE:
        assert (layout / folder / "data" / "file").exists(), folder
