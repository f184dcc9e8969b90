"""The event loop a server process runs on: uvloop (the default) or asyncio's own.

gRPC's aio runtime and the loop take most of the service's CPU per call (issue 17); uvloop,
the libuv loop written in Cython, runs the same coroutines with less of it (docs/benchmarks.md
has the figures). STUDENTPERF_EVENT_LOOP=asyncio falls back to the standard library's loop,
for a platform uvloop does not build on or to rule the loop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from studentperf.config import ConfigError

UVLOOP = "uvloop"
ASYNCIO = "asyncio"
EVENT_LOOPS = (UVLOOP, ASYNCIO)

T = TypeVar("T")


def default_event_loop() -> str:
    """uvloop when installed (the `server` extra brings it), else asyncio's loop."""
    return UVLOOP if importlib.util.find_spec("uvloop") is not None else ASYNCIO


def check_event_loop(name: str) -> None:
    """ConfigError unless `name` is a loop this process can run on."""
    if name not in EVENT_LOOPS:
        raise ConfigError(
            f"STUDENTPERF_EVENT_LOOP={name!r} is not valid: must be one of {', '.join(EVENT_LOOPS)}"
        )
    if name == UVLOOP and importlib.util.find_spec("uvloop") is None:
        raise ConfigError(
            "STUDENTPERF_EVENT_LOOP=uvloop but uvloop is not installed: "
            "pip install 'studentperf[server]', or set STUDENTPERF_EVENT_LOOP=asyncio"
        )


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == UVLOOP:
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def running_loop_name() -> str:
    """The loop the caller runs on, by the module that defines it: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.split(".", 1)[0]


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """`asyncio.run(main)` on the loop `name`."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)
