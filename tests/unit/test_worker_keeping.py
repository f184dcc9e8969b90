"""The supervisor keeping a slot's worker (workers.Supervisor._run_worker, _keep), with
forked stand-ins for workers: a dead worker is seen at once, whatever its /health probes wait
for; and a failure of the supervisor's own after a worker started does not leave it running
untracked beside its successor. (Found by review, helper-53.)"""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from inference_service.settings import Settings
from inference_service.stop_bound import longest_stop_s
from inference_service.workers import Slot, Supervisor, _stop_bound_s
from studentperf.health_http import serve_health
from tests.raw_http import get_status

FORK = multiprocessing.get_context("fork")


class StandIns:
    """The supervisor's spawn context, its workers replaced by `target(*args)` in a fork."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self._target, self._args = target, args
        self.started: list[BaseProcess] = []

    def Pipe(self, duplex: bool = False) -> Any:
        return FORK.Pipe(duplex=duplex)

    def Process(self, target: Any, args: Any, name: str) -> BaseProcess:
        process = FORK.Process(target=self._target, args=self._args, name=name)
        self.started.append(process)
        return process


def supervisor(tmp_path: Any, spawn: StandIns) -> Supervisor:
    settings = Settings.from_env(
        {"STUDENTPERF_SPOOL_DIR": str(tmp_path), "STUDENTPERF_WORKERS": "2"}
    )
    made = Supervisor(settings)
    made._spawn = spawn  # type: ignore[assignment]
    return made


async def test_a_dead_worker_is_seen_at_once_while_health_probes_wait_on_a_hung_one(
    tmp_path: Any,
) -> None:
    hung = socket.socket()  # a hung worker's status endpoint: takes the call, never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(100)
    keeper = supervisor(tmp_path, StandIns(os._exit, 3))  # a worker that dies at once
    keeper.slots[0] = Slot(0, pid=1, status_port=hung.getsockname()[1], ready=True)
    server = await serve_health(keeper.health, keeper.metrics, "127.0.0.1", 0, blocking=True)
    port = server.sockets[0].getsockname()[1]
    probes = [asyncio.create_task(get_status(port, "/health")) for _ in range(18)]
    try:
        await asyncio.sleep(0.3)  # the probes wait on the hung worker (1 s each ask)
        code = await keeper._run_worker(keeper.slots[1], keeper.settings, asyncio.Event())
        answered = sum(p.done() for p in probes)
        assert code == 3
        assert answered == 0, "the dead worker's exit was seen only after probes were answered"
    finally:
        server.close()
        await asyncio.gather(*probes, return_exceptions=True)
        hung.close()


async def test_a_failure_after_a_worker_started_leaves_no_worker_untracked(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawn = StandIns(time.sleep, 30)  # workers that serve until stopped
    keeper = supervisor(tmp_path, spawn)
    loop = asyncio.get_running_loop()
    add_reader = loop.add_reader
    calls = 0

    def failing_once(fd: Any, callback: Callable[..., Any], *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # epoll refuses the first worker's sentinel
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        add_reader(fd, callback, *args)

    monkeypatch.setattr(loop, "add_reader", failing_once)
    stop = asyncio.Event()
    keeping = asyncio.create_task(keeper._keep(keeper.slots[0], "127.0.0.1:0", stop))
    try:
        async with asyncio.timeout(20):
            while len(spawn.started) < 2:  # noqa: ASYNC110 (the keeper announces nothing)
                await asyncio.sleep(0.05)
            stop.set()
            await keeping
        assert not spawn.started[0].is_alive(), "the first worker runs on, untracked"
    finally:
        for process in spawn.started:
            if process.is_alive():
                process.kill()
            process.join(5)


class Unpicklable(StandIns):
    """A start() that fails as a bug of the supervisor's would: every time, the same way."""

    def Process(self, target: Any, args: Any, name: str) -> BaseProcess:
        process = super().Process(target, args, name)

        def start() -> None:
            raise TypeError("cannot pickle '_thread.lock' object")

        process.start = start  # type: ignore[method-assign]
        return process


async def test_a_fault_of_the_supervisors_own_stops_the_service_rather_than_retry(
    tmp_path: Any,
) -> None:
    """It would fail on every try, behind a /health that says serving while other workers do.
    (Found by review, helper-54.)"""
    keeper = supervisor(tmp_path, Unpicklable(time.sleep, 30))
    stop = asyncio.Event()
    assert await asyncio.wait_for(keeper._keep(keeper.slots[0], "127.0.0.1:0", stop), 10) == 1
    assert stop.is_set()


@pytest.mark.parametrize("grace_s", [0.0, 10.0, 20.0, 60.0])
def test_the_supervisor_waits_out_a_workers_longest_graceful_stop(grace_s: float) -> None:
    """It once waited grace + publish timeout + 30 s, short of the stop's second grace (handlers
    left running) and its connections' closes from a grace of 14 s on: a worker closing its
    history pool was killed."""
    settings = replace(Settings(), shutdown_grace_s=grace_s)
    assert _stop_bound_s(settings) > longest_stop_s(settings)
    # The stop's own steps, each at its bound: both graces, the last micro-batches, the margin
    # for handlers, the producer's flush, and the follower's and the history pool's closes.
    assert longest_stop_s(settings) >= 2 * grace_s + settings.publish_timeout_s + 10 + 1 + 5
