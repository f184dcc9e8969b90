"""STUDENTPERF_EVENT_LOOP: uvloop by default (the server extra installs it), asyncio on request,
anything else refused naming the variable; and `run` really runs on the loop it names."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
import uvloop

from inference_service import event_loop
from inference_service.settings import Settings
from studentperf.config import ConfigError


def test_uvloop_by_default_and_asyncio_when_asked() -> None:
    assert Settings.from_env({}).event_loop == "uvloop"
    assert Settings().event_loop == "uvloop"
    assert Settings.from_env({"STUDENTPERF_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


@pytest.mark.parametrize("value", ["trio", "UVLOOP", "uv", "tokio"])
def test_a_loop_not_offered_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="STUDENTPERF_EVENT_LOOP"):
        Settings.from_env({"STUDENTPERF_EVENT_LOOP": value})
    with pytest.raises(ConfigError, match="STUDENTPERF_EVENT_LOOP"):
        Settings(event_loop=value)


def test_without_uvloop_the_default_is_asyncio_and_asking_for_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "uvloop" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert Settings.from_env({}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match=r"uvloop is not installed.*studentperf\[server\]"):
        Settings.from_env({"STUDENTPERF_EVENT_LOOP": "uvloop"})


async def _loop_and_name() -> tuple[asyncio.AbstractEventLoop, str]:
    await asyncio.sleep(0)
    return asyncio.get_running_loop(), event_loop.running_loop_name()


def test_run_runs_on_the_loop_it_names() -> None:
    loop, name = event_loop.run(_loop_and_name(), "uvloop")
    assert isinstance(loop, uvloop.Loop) and name == "uvloop"
    loop, name = event_loop.run(_loop_and_name(), "asyncio")
    assert not isinstance(loop, uvloop.Loop) and name == "asyncio"
    assert loop.is_closed()
