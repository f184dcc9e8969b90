"""The port's lock of a supervisor with workers (inference_service.port_lock), on real sockets
and processes: taken once per port whatever the host, named when refused, gone with its holder
even while that holder's spawned children live on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inference_service.port_lock import hold_port
from studentperf.config import ConfigError

REPO = Path(__file__).resolve().parents[2]

# A supervisor in miniature: holds the port's lock, spawns a child as the supervisor spawns its
# workers, says both pids, and waits to be killed.
HOLDER = """
import asyncio, multiprocessing, sys, time
from inference_service.port_lock import hold_port

async def main() -> None:
    with hold_port(sys.argv[1]):
        child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))
        child.start()
        print(child.pid, flush=True)
        await asyncio.sleep(600)

if __name__ == "__main__":
    asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def take(address: str) -> None:
    with hold_port(address):
        pass


def refusal(address: str) -> str:
    with pytest.raises(ConfigError) as refused:
        asyncio.run(take(address))
    return str(refused.value)


async def test_a_second_holder_on_the_port_is_refused_naming_the_address_and_the_holder() -> None:
    port = free_port()
    with hold_port(f"127.0.0.1:{port}"):
        # More refusals than the lock's backlog: each one's probe is turned away, not queued,
        # so every one still names the holder. Off the loop, which accepts the probes.
        for host in ["127.0.0.1", "0.0.0.0", "[::]"] * 4:
            message = await asyncio.to_thread(refusal, f"{host}:{port}")
            assert message.startswith(f"STUDENTPERF_LISTEN_ADDRESS: cannot listen on {host}:{port}")
            assert f"(supervisor pid {os.getpid()})" in message
    await take(f"0.0.0.0:{port}")  # let go when the holder is done


def test_the_lock_dies_with_its_holder_though_its_spawned_child_lives_on() -> None:
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, f"127.0.0.1:{port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        assert f"(supervisor pid {holder.pid})" in refusal(f"127.0.0.1:{port}")
        holder.kill()  # SIGKILL: as a supervisor killed, its worker still running
        holder.wait()
        os.kill(child, 0)  # the orphan still runs
        asyncio.run(take(f"127.0.0.1:{port}"))
    finally:
        holder.kill()
        holder.wait()
        os.kill(child, signal.SIGKILL)
