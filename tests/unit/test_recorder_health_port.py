"""A recorder whose health port is taken stops at once with a line naming the setting."""

from __future__ import annotations

import asyncio
import socket

import pytest

from recorder_service.service import run
from recorder_service.settings import Settings
from studentperf.config import ConfigError


def test_a_taken_health_port_is_a_config_error_before_anything_connects() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        # Neither Kafka nor PostgreSQL is there: the port is the first thing it takes.
        settings = Settings(health_port=port)
        with pytest.raises(
            ConfigError, match=f"RECORDER_HEALTH_PORT: cannot listen on 127.0.0.1:{port}"
        ):
            asyncio.run(run(settings, asyncio.Event()))
    finally:
        taken.close()
