"""The recorder's settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from studentperf.config import (
    ConfigError,
    DatabaseRole,
    SharedSettings,
    env_int,
    env_secret,
    env_str,
)

DEAD_LETTER_SUFFIX = ".dead-letter"
DEFAULT_MAX_FUTURE_SKEW_S = 300
# The erasure key of the development stack and the tests, whose database is on this machine and
# trusts local connections (as their DSNs need no password). Anywhere else the key is required.
DEV_ERASURE_KEY = b"studentperf-development-erasure-key: not a secret, never use it elsewhere"
ERASURE_KEY_MIN_LENGTH = 32
# A retention longer than this is a mistake: its cutoff would fall before the year 1.
MAX_RETENTION_DAYS = 36_500
_LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# Where this machine's PostgreSQL listens on a Unix socket (Debian's, and the server's default).
_LOCAL_SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")


def _on_this_machine(database_url: str, env: Mapping[str, str]) -> bool:
    """Whether the URL names a database on this machine: a loopback address, or this machine's
    Unix socket. A host may also come from the URL's query (`?host=`) or from PGHOST when the
    URL has none; a socket folder elsewhere (`/cloudsql/...`) is a proxy to another machine."""
    parts = urlsplit(database_url)
    hosts = [parts.hostname or ""]
    hosts += [v for k, v in parse_qsl(parts.query) if k == "host"]
    if not any(hosts):
        hosts.append(env.get("PGHOST", ""))
    named = [h for h in hosts if h]
    return not named or all(
        h in _LOCAL_HOSTS or (h.startswith("/") and h.rstrip("/").startswith(_LOCAL_SOCKET_DIRS))
        for h in named
    )


@dataclass(frozen=True)
class Settings:
    shared: SharedSettings = field(default_factory=SharedSettings)
    # Recorders sharing a group id share the topic's partitions.
    consumer_group: str = "studentperf-recorder"
    # Most events read in one batch; each write shard writes its part in one transaction
    # (about 2,000 events a shard: smaller transactions cost more database CPU per event).
    batch_max_events: int = 4_000
    # How long a batch may keep gathering events after its first one arrived.
    batch_max_wait_ms: int = 200
    # Shards a batch is split into by student, written at once over as many database
    # connections (recorder_service/sharding.py). Two: one backend's CPU was the limit of a
    # recorder (docs/recorder.md), and two let PostgreSQL work on one shard while the other
    # waits on its round trips or commit; each shard is a backend, so more than the database
    # host's free cores buy nothing and hold more connections.
    write_shards: int = 2
    # Where records that can never be written go; empty means "<topic>.dead-letter".
    dead_letter_topic: str = ""
    # Port of the HTTP /health and /metrics endpoint; 0 serves none.
    health_port: int = 0
    health_host: str = "127.0.0.1"
    # How long a rebalance waits for the batches being written before abandoning them uncommitted.
    revoke_wait_ms: int = 10_000
    # How far an event's occurred_at may be ahead of this recorder's clock (the services'
    # clocks differ a little); an event further ahead is dead-lettered, not stored.
    max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S
    # Predictions older than this many days are deleted (recorder_service/retention.py);
    # 0 keeps everything.
    retention_days: int = 0
    # How often the recorder runs retention, and how many predictions each transaction deletes
    # (docs/recorder.md, "Retention", measured the size).
    retention_interval_s: int = 3_600
    retention_batch: int = 5_000
    # The key of the keyed hash that names erased students in the `erasures` audit table
    # (recorder_service/erasure.py). Every recorder of a database must use the same one, for
    # good: under another key an erased student's old events are no longer recognised.
    erasure_key: bytes = field(default=DEV_ERASURE_KEY, repr=False)

    @property
    def dead_letters_to(self) -> str:
        return self.dead_letter_topic or self.shared.kafka_topic + DEAD_LETTER_SUFFIX

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], role: DatabaseRole = DatabaseRole.RECORDER
    ) -> Settings:
        """The recorder's settings; `role`: whom the default DSN connects as (the replay of
        dead letters only reads, as the read-only analyst, unless STUDENTPERF_DATABASE_URL
        names another)."""
        shared = SharedSettings.from_env(env, role)
        return cls(
            shared=shared,
            consumer_group=env_str(env, "CONSUMER_GROUP", cls.consumer_group),
            batch_max_events=env_int(env, "BATCH_MAX_EVENTS", cls.batch_max_events, minimum=1),
            batch_max_wait_ms=env_int(env, "BATCH_MAX_WAIT_MS", cls.batch_max_wait_ms, minimum=1),
            write_shards=env_int(env, "RECORDER_WRITE_SHARDS", cls.write_shards, minimum=1),
            dead_letter_topic=env_str(env, "DEAD_LETTER_TOPIC", cls.dead_letter_topic),
            health_port=env_int(
                env, "RECORDER_HEALTH_PORT", cls.health_port, minimum=0, maximum=65535
            ),
            health_host=env_str(env, "RECORDER_HEALTH_HOST", cls.health_host),
            revoke_wait_ms=env_int(env, "REVOKE_WAIT_MS", cls.revoke_wait_ms, minimum=0),
            max_future_skew_s=env_int(env, "MAX_FUTURE_SKEW_S", cls.max_future_skew_s, minimum=0),
            retention_days=env_int(
                env, "RETENTION_DAYS", cls.retention_days, minimum=0, maximum=MAX_RETENTION_DAYS
            ),
            retention_interval_s=env_int(
                env, "RETENTION_INTERVAL_S", cls.retention_interval_s, minimum=1
            ),
            retention_batch=env_int(env, "RETENTION_BATCH", cls.retention_batch, minimum=1),
            erasure_key=erasure_key(env, shared.database_url),
        )


def erasure_key(env: Mapping[str, str], database_url: str) -> bytes:
    """STUDENTPERF_ERASURE_KEY (or _FILE), at least 32 characters; unset, the development key,
    but only for a database on this machine (the dev stack's, the tests'): elsewhere a recorder
    without a key refuses to start rather than hash students under a key anyone can read."""
    key = env_secret(env, "ERASURE_KEY")
    if key:
        if len(key) < ERASURE_KEY_MIN_LENGTH:
            raise ConfigError(
                f"STUDENTPERF_ERASURE_KEY is too short: it needs {ERASURE_KEY_MIN_LENGTH}+ "
                "characters (e.g. `openssl rand -hex 32`)"
            )
        return key.encode()
    if _on_this_machine(database_url, env):
        return DEV_ERASURE_KEY
    raise ConfigError(
        "STUDENTPERF_ERASURE_KEY (or STUDENTPERF_ERASURE_KEY_FILE) is required when the database "
        "is not on this machine: 32+ random characters (e.g. `openssl rand -hex 32`), the same "
        "for every recorder of the database, kept for good (see the README, Erasure)"
    )
