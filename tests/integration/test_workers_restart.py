"""STUDENTPERF_WORKERS=2 restarted after its supervisor was SIGKILLed (review, issue 17 item 3).

A worker whose supervisor is gone stops by itself, as on SIGTERM: it finishes its calls in flight
(up to STUDENTPERF_SHUTDOWN_GRACE_S, 10 s by default) and publishes or spools their events, and
holds its slot's spool folder until it has. A supervisor started again meanwhile (systemd's
Restart=, a shell loop) spawns a new worker for that slot, whose spool folder is still held: the
new worker cannot open it, exits with status 2 before its slot ever served, and the new
supervisor takes that for "cannot start at all" and stops the whole service with status 2,
although the folder frees itself seconds later. Here the old worker is held in its stop with
SIGSTOP (as a long call in flight, or a loaded machine, holds it) and let go after a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.devstack import KafkaBroker, PostgresServer
from tests.integration.test_workers import WORKERS, Stack, alive

HELD_S = 8.0


@pytest.fixture
async def stack(
    kafka: KafkaBroker, postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> AsyncIterator[Stack]:
    stack = await Stack.create(
        kafka,
        postgres,
        model_path,
        tmp_path,
        "wr",
        STUDENTPERF_WORKERS=str(WORKERS),
        STUDENTPERF_LOG_FORMAT="text",
    )
    yield stack
    await stack.close()


async def test_a_restart_while_a_killed_supervisors_worker_still_stops_serves_once_it_has(
    stack: Stack,
) -> None:
    stack.inference.start()
    await stack.all_serving()
    old = await stack.pids()
    await stack.inference.kill_async()  # SIGKILL: its workers stop by themselves
    os.kill(old["1"], signal.SIGSTOP)  # worker 1 is still in its stop, its folder held
    try:
        stack.inference.start()  # restarted at once, as a service manager does
        await asyncio.sleep(HELD_S)
        exited = stack.inference.returncode
    finally:
        os.kill(old["1"], signal.SIGCONT)  # it ends its stop and frees its folder
    for pid in old.values():
        for _ in range(100):
            if not alive(pid):
                break
            await asyncio.sleep(0.1)
    log = stack.inference.log_tail(40)
    assert exited is None and stack.inference.running, (
        f"the restarted service exited with status {stack.inference.returncode} while the "
        f"killed supervisor's worker 1 (pid {old['1']}) still held worker-1's spool folder, "
        f"instead of waiting for it:\n{log}"
    )
    await stack.all_serving(timeout_s=60)  # worker 1's successor too, once the folder is free
    assert stack.inference.running
