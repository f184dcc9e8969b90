"""``python -m infra.devstack kafka`` (or ``postgres``): one development service in the
foreground under ``.local/`` with the default ports, until Ctrl-C or SIGTERM; `run_foreground`
is also how ``make up`` supervises its servers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from infra.devstack.kafka import KafkaBroker
from infra.devstack.postgres import PostgresServer
from infra.devstack.service import (
    DEFAULT_DATABASE,
    DEFAULT_KAFKA_CONTROLLER_PORT,
    DEFAULT_KAFKA_PORT,
    DEFAULT_POSTGRES_PORT,
    Service,
    ServiceError,
    local_dir,
)


async def prepare_service(service: Service) -> None:
    """The default work done once a service answers: create the project's database."""
    if isinstance(service, PostgresServer):
        await service.ensure_database(DEFAULT_DATABASE)


async def run_foreground(
    services: Sequence[Service],
    *,
    ready_timeout: float = 120.0,
    on_ready: Callable[[Service], Awaitable[None]] = prepare_service,
) -> int:
    """Start ``services`` in order, wait for each (then ``on_ready(service)``), and supervise
    them until SIGINT/SIGTERM or until one exits; stop them in reverse order.

    Returns a process exit code (0 after a requested stop, 1 when a service failed).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    code = 0
    try:
        for service in services:
            t0 = time.monotonic()
            service.start()
            started.append(service)
            waiting = asyncio.ensure_future(service.wait_ready(ready_timeout))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not waiting.done():
                waiting.cancel()
                return 130
            waiting.result()
            print(f"{service.describe()}: ready in {time.monotonic() - t0:.1f} s", flush=True)
            await on_ready(service)
        print("running; Ctrl-C to stop", flush=True)
        while not stop.is_set():
            dead = [s for s in started if not s.running]
            if dead:
                for s in dead:
                    print(f"{s.name} exited ({s.returncode})\n{s.log_tail()}", file=sys.stderr)
                code = 1
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        for service in reversed(started):
            service.stop()
            print(f"{service.name}: stopped", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return code


def default_kafka(state_dir: Path | None = None, port: int = DEFAULT_KAFKA_PORT) -> KafkaBroker:
    """The development broker: ``.local/kafka/state``, ports 9092 (client) and 9093 by default;
    the controller listens on the port after the client's."""
    return KafkaBroker(
        state_dir or local_dir() / "kafka" / "state",
        port=port,
        controller_port=port + DEFAULT_KAFKA_CONTROLLER_PORT - DEFAULT_KAFKA_PORT,
    )


def default_postgres(
    state_dir: Path | None = None, port: int = DEFAULT_POSTGRES_PORT
) -> PostgresServer:
    """The development PostgreSQL: ``.local/postgres``, port 5432 by default."""
    return PostgresServer(state_dir or local_dir() / "postgres", port=port)


SERVICES: dict[str, Callable[[Path | None], Service]] = {
    "kafka": default_kafka,
    "postgres": default_postgres,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.devstack",
        description="Run a development service in the foreground under .local/ (Ctrl-C stops it).",
    )
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--state-dir", type=Path, default=None, help="default: under .local/")
    args = parser.parse_args(argv)
    service = SERVICES[args.service](args.state_dir)
    return asyncio.run(run_foreground([service]))
