"""`studentperf-rollback` against running services: the database's pointer (two replicas on
machines of their own, STUDENTPERF_MODEL_SOURCE=database) and one machine's models folder. A
rollback must reach every running replica within seconds, as a promotion does, without failing
a call; a version that does not exist or whose bytes were changed must be refused, nothing
moved.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from inference_service.settings import Settings
from inference_service.wait_for_model import wait_for_model
from infra.bench.process import HealthClient
from infra.devstack import free_port
from studentperf.config import DatabaseRole
from studentperf.model_artifact import CURRENT, MODEL_FILE
from studentperf.model_store import current_pointer, store_version
from tests.integration.conftest import Stack
from tests.integration.helpers import ALLOW_CHANGES
from tests.integration.processes import ServiceProcess
from tests.integration.test_many_machines import (
    POLL_S,
    SWITCH_BOUND_S,
    Answers,
    Replica,
    _spare_version,
    check_switched,
    predict_until,
    replicas,
    train,
    training,
)
from trainer.rollback_cli import main as rollback
from trainer.train import run

__all__ = ["replicas"]  # the fixture, shared with test_many_machines


async def roll_back(*args: str) -> tuple[int, str]:
    """Runs the command as an operator would, in a thread (it runs its own event loop)."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with redirect_stdout(out), redirect_stderr(err):
            return rollback(list(args))

    code = await asyncio.to_thread(call)
    return code, out.getvalue() + err.getvalue()


async def serve_under_load(
    replicas: list[Replica], version: str, act: asyncio.Future[float]
) -> dict[str, Answers]:
    """Loads every replica until each answered with `version` (or 30 s), and 1 s on; `act`
    gives the moment the switch was made."""
    stop = asyncio.Event()
    answers = {r.name: Answers() for r in replicas}
    loading = [
        asyncio.create_task(predict_until(r.address, stop, answers[r.name], loops=4))
        for r in replicas
    ]
    await act
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(  # noqa: ASYNC110 (the load tasks fill it)
        a.first_answer_of(version) is not None for a in answers.values()
    ):
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    stop.set()
    await asyncio.gather(*loading)
    return answers


async def test_replicas_serve_the_rolled_back_version_within_seconds(
    stack: Stack, replicas: list[Replica], tmp_path: Path
) -> None:
    trainer_models = tmp_path / "trainer"
    # A new installation's init container waits for the first model (deploy/base/inference.yaml).
    waiting = asyncio.create_task(
        wait_for_model(
            Settings.from_env(
                {
                    "STUDENTPERF_MODEL_SOURCE": "database",
                    "STUDENTPERF_MODELS_DIR": str(tmp_path / "init-models"),
                    "STUDENTPERF_SPOOL_DIR": str(tmp_path / "init-spool"),
                    "STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.INFERENCE),
                }
            ),
            interval_s=0.2,
            say=lambda _: None,
        )
    )
    first = await train(training(trainer_models, stack, seed=11))
    old = first.version
    assert await asyncio.wait_for(waiting, 10) == old
    # A new pod's folder: linked, so the service starts on it even if the database then flickers.
    assert (tmp_path / "init-models" / CURRENT).readlink().name == old
    second = await train(training(trainer_models, stack, seed=12))
    new = second.version
    for replica in replicas:
        replica.process.start()
    assert [await r.ready() for r in replicas] == [new, new]

    trainer_url = stack.database_url_as(DatabaseRole.TRAINER)
    args = ("--source", "database", "--database-url", trainer_url)
    act: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    said_back: list[str] = []

    async def operator() -> None:
        await asyncio.sleep(1)  # under load first
        # Refused, nothing moved: a version that does not exist.
        code, said = await roll_back(*args, "20990101T000000Z-deadbeef")
        assert code == 2 and "does not exist" in said, said
        code, said = await roll_back(*args)  # no VERSION: the one the current replaced
        print(f"\n{said.strip()}")
        assert code == 0 and f"{new} -> {old}" in said
        said_back.append(said)
        # The bound runs from the pointer's move, not from the command's start (its connect,
        # download and hashes are not the replicas' to make up for).
        owner = await asyncpg.connect(stack.database_url)
        try:
            moved_at = await owner.fetchval("SELECT moved_at FROM model_pointer")
        finally:
            await owner.close()
        act.set_result(moved_at.timestamp())

    acting = asyncio.create_task(operator())
    answers = await serve_under_load(replicas, old, act)
    await acting
    check_switched(replicas, answers, old, act.result(), "the rollback")
    for replica in replicas:
        assert await replica.model_version() == old

    # A third version promoted over the rolled-back-to one; a rollback from it serves what it
    # replaced, never the version a rollback took off (which was promoted after `old`).
    third = await train(training(trainer_models, stack, seed=13))
    assert third.decision.current_version == old
    code, said = await roll_back(*args)
    assert code == 0 and f"{third.version} -> {old}" in said, said

    # A stored version whose pickle was changed in the table: refused before the pointer moves.
    forged = await asyncio.to_thread(_spare_version, trainer_models)
    trainer = await asyncpg.connect(trainer_url)
    owner = await asyncpg.connect(stack.database_url)
    try:
        await store_version(trainer, trainer_models / forged)
        # Past migration 0021's trigger: a deliberate step, which the hash check still catches.
        await owner.execute(ALLOW_CHANGES)
        await owner.execute(
            "UPDATE model_artifact_files SET content = content || '\\x00'::bytea"
            " WHERE model_version = $1 AND file_name = $2",
            forged,
            MODEL_FILE,
        )
        code, said = await roll_back(*args, forged)
        assert code == 2 and f"{MODEL_FILE} hashes to" in said and "nothing moved" in said, said
        assert await current_pointer(trainer) == old
        # Forward again by name: the version promoted last.
        code, said = await roll_back(*args, new)
        assert code == 0, said
        assert await current_pointer(trainer) == new
        moves = await pointer_moves(stack.database_url_as(DatabaseRole.ANALYST))
    finally:
        await trainer.close()
        await owner.close()
    deadline = time.monotonic() + SWITCH_BOUND_S
    served = [await r.model_version() for r in replicas]
    while served != [new, new] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        served = [await r.model_version() for r in replicas]
    assert served == [new, new]

    # Every move of the pointer left its row, in order; the refused rollbacks (no such version,
    # forged bytes) left none. The analyst reads them: the audit is for people.
    trainer_role = str(DatabaseRole.TRAINER)
    print(*(tuple(m) for m in moves), sep="\n")
    assert [(m["from_version"], m["to_version"], m["kind"], m["moved_by"]) for m in moves] == [
        (None, old, "promotion", trainer_role),
        (old, new, "promotion", trainer_role),
        (new, old, "rollback", trainer_role),
        (old, third.version, "promotion", trainer_role),
        (third.version, old, "rollback", trainer_role),
        (old, new, "rollback", trainer_role),
    ]
    # Promotions carry the gate's reason, rollbacks why that version.
    assert [m["reason"] for m in moves[:2]] == [first.decision.reason, second.decision.reason]
    assert moves[2]["reason"].startswith(f"the version {new} replaced when promoted (")
    assert moves[4]["reason"].startswith(f"the version {third.version} replaced when promoted (")
    assert moves[5]["reason"] == "named"
    # The command names the row it wrote.
    assert (
        f"recorded as move {moves[2]['id']} in model_pointer_moves (by {trainer_role} at"
        in said_back[0]
    )
    assert [m["moved_at"] for m in moves] == sorted(m["moved_at"] for m in moves)


async def pointer_moves(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT * FROM model_pointer_moves ORDER BY id"
        )
        return rows
    finally:
        await conn.close()


@pytest.fixture
async def one_machine(stack: Stack, tmp_path: Path) -> AsyncIterator[Replica]:
    """One service on the models folder the trainer writes (STUDENTPERF_MODEL_SOURCE=folder)."""
    models = tmp_path / "models"
    address, status_port = f"127.0.0.1:{free_port()}", free_port()
    env = {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": stack.topic,
        "STUDENTPERF_DATABASE_URL": stack.database_url_as(DatabaseRole.INFERENCE),
        "STUDENTPERF_HISTORY_DATABASE_URL": stack.database_url_as(DatabaseRole.ANALYST),
        "STUDENTPERF_MODEL_SOURCE": "folder",
        "STUDENTPERF_MODELS_DIR": str(models),
        "STUDENTPERF_MODEL_POLL_INTERVAL_S": str(POLL_S),
        "STUDENTPERF_LISTEN_ADDRESS": address,
        "STUDENTPERF_SPOOL_DIR": str(tmp_path / "spool"),
        "STUDENTPERF_INFERENCE_HEALTH_PORT": str(status_port),
        "STUDENTPERF_LOG_FORMAT": "text",
    }
    process = ServiceProcess("inference_service", env, tmp_path / "one-machine.log")
    replica = Replica("one-machine", address, models, process, HealthClient(status_port))
    yield replica
    await process.stop_async()


async def test_one_machine_serves_the_rolled_back_version_of_its_folder(
    stack: Stack, one_machine: Replica
) -> None:
    config = replace(training(one_machine.models, stack, seed=21), publish=False)
    old = (await asyncio.to_thread(run, config, io.StringIO())).version
    new = (await asyncio.to_thread(run, replace(config, seed=22), io.StringIO())).version
    one_machine.process.start()
    assert await one_machine.ready() == new

    args = ("--source", "folder", "--models-dir", str(one_machine.models))
    act: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def operator() -> None:
        await asyncio.sleep(1)
        with (one_machine.models / old / MODEL_FILE).open("ab") as model:
            model.write(b"\0")
        code, said = await roll_back(*args)
        assert code == 2 and f"{MODEL_FILE} hashes to" in said, said
        with (one_machine.models / old / MODEL_FILE).open("rb+") as model:
            model.truncate(model.seek(0, 2) - 1)  # the byte taken off again
        code, said = await roll_back(*args)
        print(f"\n{said.strip()}")
        assert code == 0 and f"{new} -> {old}" in said
        act.set_result((one_machine.models / CURRENT).lstat().st_mtime)  # when the link moved

    acting = asyncio.create_task(operator())
    answers = await serve_under_load([one_machine], old, act)
    await acting
    check_switched([one_machine], answers, old, act.result(), "the rollback")
