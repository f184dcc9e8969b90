"""STUDENTPERF_WORKERS=2: two server processes on one port, on a real broker and database.

The promise is the one process keeps (tests/integration/test_faults.py): every prediction
answered OK ends up as exactly one row. Here it must hold across workers: both serve the port,
SIGTERM stops both, a worker killed with events in its spool is replaced and its successor
replays them, and a spool folder no worker owns any more (the count lowered) is replayed too.
Each test prints sent / acknowledged / spooled / stored / duplicates / lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_service.spool import read_segment
from infra.devstack import KafkaBroker, PostgresServer
from tests.integration.helpers import eventually
from tests.integration.processes import Load, Tally, drive_load
from tests.integration.service_stack import ServiceStack

WORKERS = 2
CALLS = "studentperf_inference_rpc_duration_seconds_count"
# The kernel spreads connections, not calls, over the workers, each by a hash of its address:
# with 8, all of them went to one worker about once in 100 tries; with 24, once in 8 million.
CONNECTIONS = 24


class Stack(ServiceStack):
    """`status` is the supervisor's /health and /metrics, for every worker."""

    async def all_serving(self, timeout_s: float = 120, *, kafka_connected: bool = False) -> None:
        """Waits until the supervisor's /health says every worker serves (and, with
        `kafka_connected`, has connected to Kafka: a worker serves before, spooling, and while
        anything is spooled its new events queue behind it)."""
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    code, body = await asyncio.to_thread(self.status.get, "/health")
                except OSError:
                    code, body = 0, "{}"
                health = json.loads(body)
                if code == 200 and health["workers_serving"] == WORKERS:
                    workers = health["workers"]
                    if not kafka_connected or all(w["kafka_connected"] for w in workers):
                        return
                await asyncio.sleep(0.2)

    async def per_worker(self, name: str) -> dict[str, float]:
        """A metric summed over its other labels, by worker."""
        metrics = await asyncio.to_thread(self.status.metrics)
        found: dict[str, float] = {}
        for key, value in metrics.items():
            if key == name or key.startswith(name + "{"):
                worker = re.search(r'worker="(\d+)"', key)
                if worker:
                    found[worker[1]] = found.get(worker[1], 0) + value
        return found

    async def both_answered(self, timeout_s: float = 60) -> dict[str, float]:
        """Calls answered by each worker, once both have answered some: the supervisor leaves
        out of /metrics a worker too busy to answer it within its bound, so it is asked
        again."""
        async with asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(OSError):
                    calls = await self.per_worker(CALLS)
                    if sorted(calls) == ["0", "1"] and min(calls.values()) > 0:
                        return calls
                await asyncio.sleep(0.5)

    async def pids(self) -> dict[str, int]:
        metrics = await asyncio.to_thread(self.status.metrics)
        found = {}
        for key in metrics:
            if key.startswith("studentperf_inference_worker_info{"):
                worker, pid = re.search(r'worker="(\d+)"', key), re.search(r'pid="(\d+)"', key)
                assert worker and pid
                found[worker[1]] = int(pid[1])
        return found

    def spooled_on_disk(self) -> dict[str, int]:
        """Events in each folder's segments, by folder name."""
        return {
            folder.name: sum(len(read_segment(p).records) for p in folder.glob("*.spool"))
            for folder in sorted(self.spool.iterdir())
            if folder.is_dir()
        }

    async def spool_left(self) -> int:
        return sum(self.spooled_on_disk().values())

    def report(self, name: str, load: Load, counts: Tally) -> None:
        print(f"\n{counts.line(name)}; refused {dict(load.failures) or 0}")
        if counts.problems():
            print("--- inference log\n" + self.inference.log_tail(60))
            print("--- recorder log\n" + self.recorder.log_tail())


@pytest.fixture
async def stack(
    own_kafka: KafkaBroker, own_postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> AsyncIterator[Stack]:
    stack = await Stack.create(
        own_kafka,
        own_postgres,
        model_path,
        tmp_path,
        "w",
        STUDENTPERF_WORKERS=str(WORKERS),
        STUDENTPERF_LOG_FORMAT="text",
    )
    yield stack
    await stack.close()


def merged(loads: list[Load], prefix: str) -> Load:
    load = Load(prefix)
    for part in loads:
        load.sent += part.sent
        load.acknowledged |= part.acknowledged
        load.failures.update(part.failures)
        load.failure_details |= part.failure_details
        load.failed_students |= part.failed_students
        load.calls += part.calls
        load.slowest_s = max(load.slowest_s, part.slowest_s)
    return load


def start_load(stack: Stack, stop: asyncio.Event, prefix: str) -> asyncio.Task[Load]:
    return asyncio.create_task(
        drive_load(stack.address, stop, workers=CONNECTIONS, prefix=prefix, connections=CONNECTIONS)
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_promise_kept(counts: Tally) -> None:
    assert counts.problems() == []
    assert counts.duplicate_events <= counts.spooled


async def test_two_workers_answer_on_one_port_and_sigterm_stops_both_recording_every_answer(
    stack: Stack,
) -> None:
    stack.recorder.start()
    stack.inference.start()
    await stack.all_serving(kafka_connected=True)
    pids = await stack.pids()
    assert len(set(pids.values())) == WORKERS and stack.inference.process is not None
    assert stack.inference.process.pid not in pids.values()

    stop = asyncio.Event()
    loading = start_load(stack, stop, "both")
    await asyncio.sleep(3)
    calls = await stack.both_answered()
    print(f"\ncalls answered by worker (pids {pids}): {calls}")
    spooled = sum((await stack.per_worker("studentperf_inference_spooled_events_total")).values())

    stack.inference.signal(signal.SIGTERM)
    assert await stack.inference.wait_async(60) == 0
    await asyncio.sleep(0.5)
    stop.set()
    load = await loading
    assert not any(alive(pid) for pid in pids.values()), "SIGTERM stopped every worker"

    # A loaded machine may make publishes outlast their 1 s bound, so events spool, and a
    # worker may stop with some still there, on disk: the next start sends them.
    left = await stack.spool_left()
    print(f"events left in the spools by the stop: {left}")
    if left:
        stack.inference.start()
        await stack.all_serving()
        assert await eventually(stack.spool_left, 0, timeout=60) == 0, "every spool drained"
    counts = await stack.tally(load, int(spooled) + left)
    stack.report("2 workers, SIGTERM under load", load, counts)
    assert_promise_kept(counts)
    log = stack.inference.log_path.read_text()
    for worker in range(WORKERS):
        assert f"worker {worker} stopped: 0 call(s) cut off in flight" in log
        # Every worker runs on the default loop, uvloop (inference_service.event_loop).
        assert re.search(rf"worker {worker} \(pid \d+\) serving on the uvloop event loop", log)
    # Calls arriving once the stop began are refused, never answered and lost.
    assert set(load.failures) <= {"UNAVAILABLE", "CANCELLED"}


async def test_a_worker_killed_with_a_spool_is_replaced_and_its_spool_replayed(
    stack: Stack,
) -> None:
    stack.recorder.start()
    stack.inference.start()
    await stack.all_serving()
    pids = await stack.pids()
    stack.kafka.stop()  # from here on, events wait in the spools

    stop = asyncio.Event()
    loading = start_load(stack, stop, "killed")
    await asyncio.sleep(4)
    os.kill(pids["1"], signal.SIGKILL)
    await asyncio.sleep(1)
    stop.set()
    load = await loading
    on_disk = stack.spooled_on_disk()
    print(f"\nevents spooled on disk by folder after worker 1's SIGKILL: {on_disk}")
    assert on_disk.get("worker-1", 0) > 0, "the killed worker left events in its spool"

    # Its successor, in the same slot and folder, serves while Kafka is still away.
    await stack.all_serving()
    restarted = await stack.pids()
    restarts = await stack.per_worker("studentperf_inference_worker_restarts_total")
    assert restarted["0"] == pids["0"] and restarted["1"] != pids["1"]
    assert restarts == {"0": 0, "1": 1}

    await stack.kafka_back()
    counts = await stack.tally(load, sum(on_disk.values()))
    stack.report("2 workers, one SIGKILLed with a spool", load, counts)
    assert_promise_kept(counts)
    assert counts.acknowledged >= on_disk["worker-1"]
    assert await eventually(stack.spool_left, 0, timeout=60) == 0, "every spool drained"


async def test_the_spool_of_a_slot_no_longer_run_is_replayed(stack: Stack) -> None:
    stack.recorder.start()
    stack.inference.start()
    await stack.all_serving()
    stack.kafka.stop()
    stop = asyncio.Event()
    loading = start_load(stack, stop, "removed")
    await asyncio.sleep(3)
    stop.set()
    load = await loading
    stack.inference.signal(signal.SIGTERM)
    assert await stack.inference.wait_async(60) == 0  # everything answered is in the spools

    # As if the service had run 4 workers and now runs 2: slot 3's folder has no worker.
    (stack.spool / "worker-1").rename(stack.spool / "worker-3")
    on_disk = stack.spooled_on_disk()
    print(f"\nevents spooled on disk by folder before the restart: {on_disk}")
    assert on_disk.get("worker-3", 0) > 0

    stack.inference.start()
    await stack.all_serving()
    assert not (stack.spool / "worker-3").exists(), "its segments moved to a slot that runs"
    await stack.kafka_back()
    counts = await stack.tally(load, sum(on_disk.values()))
    stack.report("spool of a removed slot", load, counts)
    assert_promise_kept(counts)
    assert not load.failures
    assert await eventually(stack.spool_left, 0, timeout=60) == 0, "every spool drained"


async def test_workers_that_cannot_start_stop_the_service_with_status_2(
    stack: Stack, tmp_path: Path
) -> None:
    stack.inference.env["STUDENTPERF_MODELS_DIR"] = str(tmp_path / "no-model-here")
    stack.inference.start()
    assert await stack.inference.wait_async(120) == 2
    log = stack.inference.log_path.read_text()
    assert "worker 0 cannot start" in log or "worker 1 cannot start" in log
    assert "stopped: all 2 workers" in log


async def test_workers_stop_gracefully_when_their_supervisor_is_killed(stack: Stack) -> None:
    stack.inference.start()
    await stack.all_serving()
    await stack.inference.kill_async()

    async def stopped() -> int:
        log = stack.inference.log_path.read_text()
        return sum(f"worker {i} stopped: 0 call(s) cut off" in log for i in range(WORKERS))

    assert await eventually(stopped, WORKERS, timeout=60) == WORKERS
    assert "the supervisor is gone; stopping" in stack.inference.log_path.read_text()


def spawned_workers(pid: int) -> list[int]:
    """The worker processes the supervisor `pid` spawned (not multiprocessing's resource
    tracker, its other child)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(FileNotFoundError):
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                        found.append(int(child))
    return found


async def test_workers_stop_when_their_supervisor_is_killed_while_they_start(
    stack: Stack,
) -> None:
    """A worker still starting when its supervisor dies has another parent by the time it
    looks, and nobody reads its report: it must stop all the same, not serve (and hold its
    spool folder) forever; and stop as on SIGTERM, its calls finished and its spool closed,
    not crash on the report nobody reads (which could leave its event loop waiting forever
    on the server's tasks). (Found by review, helper-52.)"""
    stack.inference.start()
    supervisor = stack.inference.pid

    async def spawned() -> int:
        return len(spawned_workers(supervisor))

    assert await eventually(spawned, WORKERS, timeout=60) == WORKERS
    workers = spawned_workers(supervisor)
    await asyncio.sleep(0.2)  # still importing, far from serving
    await stack.inference.kill_async()

    async def running() -> int:
        return sum(alive(pid) for pid in workers)

    # Start-up takes seconds on a loaded machine; then the half-second check.
    left = await eventually(running, 0, timeout=120)
    for pid in workers:  # not to outlive the test, should they
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == 0, "workers serve on with their supervisor gone"
    log = stack.inference.log_path.read_text()
    assert log.count("the supervisor is gone; stopping") == WORKERS
    assert all(f"worker {i} stopped: 0 call(s) cut off" in log for i in range(WORKERS))


async def test_a_worker_that_could_not_be_spawned_is_tried_again(stack: Stack) -> None:
    """Spawning a successor can fail for a while (no file descriptor, no process left): the
    slot is tried again once it passes, or its spool would never be replayed; and SIGTERM
    still stops every worker. (Found by review, helper-52.)"""
    stack.inference.start()
    await stack.all_serving()
    supervisor = stack.inference.pid
    before = await stack.pids()
    highest = max(int(fd) for fd in os.listdir(f"/proc/{supervisor}/fd"))
    soft, hard = resource.prlimit(supervisor, resource.RLIMIT_NOFILE)
    resource.prlimit(supervisor, resource.RLIMIT_NOFILE, (highest + 1, hard))  # no new fd
    try:
        os.kill(before["1"], signal.SIGKILL)
        await asyncio.sleep(3)  # the successor's pipe cannot be made meanwhile
    finally:
        resource.prlimit(supervisor, resource.RLIMIT_NOFILE, (soft, hard))
    await stack.all_serving()
    assert (await stack.pids())["1"] != before["1"]
    assert await stack.inference.stop_async() == 0
    log = stack.inference.log_path.read_text()
    assert "worker 1 could not be started" in log
    assert "stopped: all 2 workers" in log
