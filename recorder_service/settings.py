"""The recorder's settings, read once from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from studentperf.config import SharedSettings, env_int, env_str


@dataclass(frozen=True)
class Settings:
    shared: SharedSettings = field(default_factory=SharedSettings)
    # Recorders sharing a group id share the topic's partitions.
    consumer_group: str = "studentperf-recorder"
    # Most events read and written in one transaction.
    batch_max_events: int = 2_000
    # How long one poll waits for events when there are none; it returns as soon as some come.
    batch_max_wait_ms: int = 200

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            shared=SharedSettings.from_env(env),
            consumer_group=env_str(env, "CONSUMER_GROUP", cls.consumer_group),
            batch_max_events=env_int(env, "BATCH_MAX_EVENTS", cls.batch_max_events, minimum=1),
            batch_max_wait_ms=env_int(env, "BATCH_MAX_WAIT_MS", cls.batch_max_wait_ms, minimum=1),
        )
