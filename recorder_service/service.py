"""Starting and stopping the recorder: database, migrations, consumer, health, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import asyncpg

from recorder_service.consumer import Recorder, start_consumer
from recorder_service.dead_letters import KafkaDeadLetters, ensure_topic
from recorder_service.health import RecorderHealth, State, serve
from recorder_service.retention import run_schedule
from recorder_service.settings import DEV_ERASURE_KEY, Settings
from recorder_service.store import PostgresStore
from studentperf.config import ConfigError, configure_logging, mask_dsn
from studentperf.database_errors import database_unavailable
from studentperf.migrate import apply_migrations
from studentperf.retry import with_backoff

log = logging.getLogger(__name__)


async def connect_database(
    dsn: str, *, connections: int = 2, give_up_after_s: float = 120.0
) -> asyncpg.Pool:
    """A connection pool of at most `connections`, with the schema migrated, retrying while
    the database starts."""
    pool: asyncpg.Pool = await with_backoff(
        lambda: asyncpg.create_pool(dsn, min_size=1, max_size=connections, command_timeout=60),
        what="the database",
        retry_if=lambda error: database_unavailable(error, connecting=True),
        give_up_after_s=give_up_after_s,
    )
    async with pool.acquire() as conn:
        applied = await apply_migrations(conn)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return pool


class RetentionTask:
    """The retention job as a task of the recorder's loop (none when retention is off)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if settings.retention_days > 0:
            log.info(
                "retention: predictions older than %d days are removed every %d s",
                settings.retention_days,
                settings.retention_interval_s,
            )
            self._task = asyncio.create_task(run_schedule(pool, settings, self._stop))

    async def stop(self) -> None:
        """Lets the batch under way finish (a short transaction), then ends the job."""
        self._stop.set()
        if self._task is not None:
            await self._task


async def run(settings: Settings, stop: asyncio.Event) -> Recorder:
    """Records until `stop` is set; returns the recorder with its counts."""
    log.info(
        "starting: kafka=%s topic=%s group=%s dead letters=%s database=%s",
        settings.shared.kafka_bootstrap_servers,
        settings.shared.kafka_topic,
        settings.consumer_group,
        settings.dead_letters_to,
        mask_dsn(settings.shared.database_url),
    )
    health = RecorderHealth()
    try:
        endpoint = (
            await serve(health, settings.health_host, settings.health_port)
            if settings.health_port
            else None
        )
    except OSError as error:  # taken: a line naming the setting, not a traceback
        raise ConfigError(
            f"STUDENTPERF_RECORDER_HEALTH_PORT: cannot listen on "
            f"{settings.health_host}:{settings.health_port}: {error.strerror or error}"
        ) from None
    try:
        # One connection per write shard, and one for retention.
        pool = await connect_database(
            settings.shared.database_url, connections=settings.write_shards + 1
        )
        kafka_options = settings.shared.kafka_security.client_options()
        dead_letters = KafkaDeadLetters(
            settings.shared.kafka_bootstrap_servers,
            settings.dead_letters_to,
            client_options=kafka_options,
        )
        if settings.erasure_key == DEV_ERASURE_KEY:
            log.warning(
                "erasure: using the development key (STUDENTPERF_ERASURE_KEY unset, database on "
                "this machine); set one anywhere real"
            )
        store = PostgresStore(pool, erasure_key=settings.erasure_key, shards=settings.write_shards)
        recorder = Recorder(settings, store, dead_letters, health)
        retention = RetentionTask(pool, settings)
        try:
            consumer = await start_consumer(settings, recorder.listener)
            health.consumer = consumer
            try:
                partitions = consumer.partitions_for_topic(settings.shared.kafka_topic) or {0}
                await ensure_topic(
                    settings.shared.kafka_bootstrap_servers,
                    settings.dead_letters_to,
                    len(partitions),
                    kafka_options,
                )
                await recorder.run(consumer, stop)
            finally:
                health.consumer = None
                await consumer.stop()
        finally:
            await retention.stop()
            await dead_letters.stop()
            await pool.close()
        return recorder
    finally:
        health.state = State.STOPPED
        if endpoint is not None:
            endpoint.close()
            await endpoint.wait_closed()


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    recorder = await run(settings, stop)
    log.info(
        "stopped: %d stored, %d already stored, %d dead-lettered",
        recorder.stored,
        recorder.already_stored,
        recorder.dead_lettered,
    )


def main() -> None:
    try:
        configure_logging(os.environ)
        settings = Settings.from_env(os.environ)
    except ConfigError as error:
        raise SystemExit(f"cannot start: {error}") from None
    try:
        asyncio.run(_main(settings))
    except ConfigError as error:
        raise SystemExit(f"cannot start: {error}") from None
