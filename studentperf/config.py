"""Reading settings from environment variables, with errors that name the variable.

Each service defines its own frozen `Settings` dataclass; the variables both services share
(Kafka, topic, database) are read here once so their names and defaults cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

PREFIX = "STUDENTPERF_"

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _read(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T]) -> T:
    key = PREFIX + name
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not valid: {exc}") from None


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    return _read(env, name, default, str)


def env_int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}")
        return value

    return _read(env, name, default, parse)


def env_float(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    def parse(raw: str) -> float:
        value = float(raw)
        if not minimum <= value <= maximum:  # also refuses NaN
            raise ValueError(f"must be between {minimum} and {maximum}")
        return value

    return _read(env, name, default, parse)


@dataclass(frozen=True)
class SharedSettings:
    """Where the services meet: the broker, the topic and the database."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "prediction-events"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/studentperf"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SharedSettings:
        return cls(
            kafka_bootstrap_servers=env_str(
                env, "KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap_servers
            ),
            kafka_topic=env_str(env, "KAFKA_TOPIC", cls.kafka_topic),
            database_url=env_str(env, "DATABASE_URL", cls.database_url),
        )


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced, fit for logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def configure_logging(env: Mapping[str, str]) -> None:
    """Logs to stderr at STUDENTPERF_LOG_LEVEL (default INFO)."""

    def parse(raw: str) -> int:
        level = logging.getLevelNamesMapping().get(raw.upper())
        if level is None:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    logging.basicConfig(
        level=_read(env, "LOG_LEVEL", logging.INFO, parse),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
