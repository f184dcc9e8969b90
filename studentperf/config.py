"""Reading settings from environment variables, with errors that name the variable.

Each service defines its own frozen `Settings` dataclass; the variables both services share
(Kafka, topic, database) are read here once so their names and defaults cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from studentperf.log_format import JsonFormatter, TextFormatter

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


def env_str_renamed(env: Mapping[str, str], name: str, old_name: str, default: str) -> str:
    """STUDENTPERF_<name>; while deployments still set the variable's old name, that one too,
    with a warning (both set to different values is an error: which one was meant?)."""
    key, old_key = PREFIX + name, PREFIX + old_name
    value = _read(env, name, "", str)
    old_value = _read(env, old_name, "", str)
    if old_value and value and old_value != value:
        raise ConfigError(f"{key} and the deprecated {old_key} disagree: set {key} only")
    if old_value and not value:
        logging.getLogger(__name__).warning("%s is deprecated: set %s instead", old_key, key)
        return old_value
    return value or default


def env_secret(env: Mapping[str, str], name: str, default: str = "") -> str:
    """A secret from STUDENTPERF_<NAME>, or from the file STUDENTPERF_<NAME>_FILE names.

    Errors name the variable but never repeat its value.
    """
    key, file_key = PREFIX + name, PREFIX + name + "_FILE"
    value, path = env.get(key, "").strip(), env.get(file_key, "").strip()
    if value and path:
        raise ConfigError(f"set {key} or {file_key}, not both")
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().strip()
        except OSError as exc:
            raise ConfigError(f"{file_key}: cannot read {path}: {exc.strerror}") from None
    return value or default


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


_KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.upper() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw.upper()

    return parse


@dataclass(frozen=True)
class KafkaSecurity:
    """How the services authenticate to Kafka; passed through to aiokafka unchanged."""

    protocol: str = "PLAINTEXT"
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        return cls(
            protocol=_read(env, "KAFKA_SECURITY_PROTOCOL", cls.protocol, _one_of(_KAFKA_PROTOCOLS)),
            ssl_cafile=env_str(env, "KAFKA_SSL_CAFILE", ""),
            ssl_certfile=env_str(env, "KAFKA_SSL_CERTFILE", ""),
            ssl_keyfile=env_str(env, "KAFKA_SSL_KEYFILE", ""),
            sasl_mechanism=_read(
                env, "KAFKA_SASL_MECHANISM", cls.sasl_mechanism, _one_of(_SASL_MECHANISMS)
            ),
            sasl_username=env_str(env, "KAFKA_SASL_USERNAME", ""),
            sasl_password=env_secret(env, "KAFKA_SASL_PASSWORD"),
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if "SSL" in self.protocol:
            # Here, not at the top: the client's erase command reads its token through this
            # module, and the client installs without aiokafka (pyproject.toml).
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile or None,
                certfile=self.ssl_certfile or None,
                keyfile=self.ssl_keyfile or None,
            )
        if self.protocol.startswith("SASL"):
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return options


class DatabaseRole(StrEnum):
    """Who a process is to PostgreSQL: the login roles of migration 0004, one per process, each
    granted only what that process does, and the owner, the one role that runs migrations."""

    OWNER = "postgres"
    RECORDER = "studentperf_recorder"
    # Writes nothing since migration 0009 (RecordOutcomes publishes events); kept so existing
    # deployments' DSNs and grants stay valid.
    INFERENCE = "studentperf_inference"
    TRAINER = "studentperf_trainer"  # training, and `make monitor`
    # `make import`: reads only which of its events were stored since migration 0011 (it
    # publishes events the recorder writes).
    IMPORTER = "studentperf_importer"
    ANALYST = "studentperf_analyst"  # read-only: `make demo`, people


DEV_POSTGRES_PORT = 5432


def dev_postgres_port(env: Mapping[str, str]) -> int:
    """The development PostgreSQL's port (STUDENTPERF_POSTGRES_PORT): where `make up` runs it,
    and where the default DSNs point, so a second stack (a test's) can live beside the first."""
    return env_int(env, "POSTGRES_PORT", DEV_POSTGRES_PORT, minimum=1, maximum=65535)


def default_database_url(role: DatabaseRole, port: int = DEV_POSTGRES_PORT) -> str:
    """The development database (`make up`), connected to as `role`."""
    return f"postgresql://{role}@127.0.0.1:{port}/studentperf"


@dataclass(frozen=True)
class SharedSettings:
    """Where the services meet: the broker, the topic and the database."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "prediction-events"
    # May hold a password: kept out of repr, masked in logs (see mask_dsn). TLS to PostgreSQL
    # goes in the URL too (e.g. ?sslmode=verify-full&sslrootcert=/path/ca.pem). Settings built
    # without saying whose they are may only read.
    database_url: str = field(default=default_database_url(DatabaseRole.ANALYST), repr=False)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_env(cls, env: Mapping[str, str], role: DatabaseRole) -> SharedSettings:
        """The settings of a process that connects to PostgreSQL as `role` unless
        STUDENTPERF_DATABASE_URL names another."""
        return cls(
            kafka_bootstrap_servers=env_str(
                env, "KAFKA_BOOTSTRAP_SERVERS", cls.kafka_bootstrap_servers
            ),
            kafka_topic=env_str(env, "KAFKA_TOPIC", cls.kafka_topic),
            database_url=env_secret(
                env, "DATABASE_URL", default_database_url(role, dev_postgres_port(env))
            ),
            kafka_security=KafkaSecurity.from_env(env),
        )


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced, fit for logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


LOG_FORMATS = ("json", "text")


def configure_logging(env: Mapping[str, str], *, default_format: str = "json") -> None:
    """Logs to stderr at STUDENTPERF_LOG_LEVEL (default INFO), one JSON object a line or
    text as STUDENTPERF_LOG_FORMAT says (json|text; services default to JSON)."""

    def parse(raw: str) -> int:
        level = logging.getLevelNamesMapping().get(raw.upper())
        if level is None:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    def parse_format(raw: str) -> str:
        if raw.lower() not in LOG_FORMATS:
            raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
        return raw.lower()

    level = _read(env, "LOG_LEVEL", logging.INFO, parse)
    chosen = _read(env, "LOG_FORMAT", default_format, parse_format)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    # At DEBUG, aiokafka.conn prints every request it sends, SASL authentication included,
    # whose bytes hold the Kafka password in clear (PLAIN: "\0user\0password").
    logging.getLogger("aiokafka.conn").setLevel(max(level, logging.INFO))
