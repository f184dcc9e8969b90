"""The recorder under faults, as real processes: the database stopped under load, members of
the consumer group joining, leaving and crashing mid-batch. Nothing may be lost or doubled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from infra.bench.process import RecorderProcess
from infra.devstack import KafkaBroker, PostgresServer
from recorder_service.settings import DEAD_LETTER_SUFFIX
from tests.integration.conftest import Stack
from tests.integration.helpers import eventually, group_lag
from tests.integration.recorder_support import (
    Load,
    dead_lettered,
    metrics,
    recorder_process,
    report,
    wait_health,
    wait_stored,
)

OUTAGE_S = 10.0


@pytest.fixture(scope="module", autouse=True)
async def dead_letter_topic(stack: Stack, kafka: KafkaBroker) -> None:
    await kafka.create_topic(stack.topic + DEAD_LETTER_SUFFIX, partitions=3)


def environment(stack: Stack, group: str) -> dict[str, str]:
    return {
        "STUDENTPERF_KAFKA_BOOTSTRAP_SERVERS": stack.shared.kafka_bootstrap_servers,
        "STUDENTPERF_KAFKA_TOPIC": stack.topic,
        "STUDENTPERF_DATABASE_URL": stack.database_url,
        "STUDENTPERF_CONSUMER_GROUP": group,
        "STUDENTPERF_LOG_LEVEL": "INFO",
    }


@pytest.fixture
async def recorders() -> AsyncIterator[list[RecorderProcess]]:
    started: list[RecorderProcess] = []
    yield started
    for recorder in started:
        await asyncio.to_thread(recorder.stop, 15)


async def start(recorder: RecorderProcess) -> None:
    recorder.start()
    await wait_health(recorder, 200, timeout=30)


async def test_stopping_postgres_for_10_s_under_load_loses_nothing(
    stack: Stack,
    postgres: PostgresServer,
    recorders: list[RecorderProcess],
    tmp_path: Path,
) -> None:
    recorder = recorder_process(tmp_path, "outage", environment(stack, "outage"))
    recorders.append(recorder)
    await start(recorder)
    load = Load(stack.shared.kafka_bootstrap_servers, stack.topic, per_second=1000)
    load.start()
    try:
        await sent_at_least(load, 1_000)
        postgres.stop()
        stopped_at = time.monotonic()
        sent_before_outage = len(load.sent)
        await wait_health(recorder, 503, timeout=OUTAGE_S)
        during = await metrics(recorder)
        await asyncio.sleep(OUTAGE_S - (time.monotonic() - stopped_at))
        # However slowly a loaded machine produces, the outage lasts until it saw 1,000 events.
        await sent_at_least(load, sent_before_outage + 1_000)
        sent_during_outage = len(load.sent) - sent_before_outage
        late = await metrics(recorder)
        assert late["degraded"] == 1
        assert late["commits_total"] == during["commits_total"]  # nothing committed meanwhile
        postgres.start()
        await postgres.wait_ready(timeout=60)
        outage_s = time.monotonic() - stopped_at
        recovery_s = await wait_health(recorder, 200, timeout=60)
        await sent_at_least(load, len(load.sent) + 1_000)  # and the load goes on
    finally:
        if not postgres.running:  # the server is the whole session's: always bring it back
            postgres.start()
            await postgres.wait_ready(timeout=60)
        sent = await load.stop()

    found = await wait_stored(stack.database_url, sent, timeout=60)
    after = await metrics(recorder)
    report(
        "postgres stopped",
        sent=len(sent),
        found=found,
        dead_lettered=dead_lettered(after),
        sent_during_outage=sent_during_outage,
        outage_s=f"{outage_s:.1f}",
        recovered_after_s=f"{recovery_s:.1f}",
        retries=int(after["retries_total"]),
        kafka_level_duplicates=int(after["events_already_stored_total"]),
    )
    assert (found.missing, found.duplicates) == (0, 0)
    assert after["outages_total"] == 1
    assert await asyncio.to_thread(recorder.stop) == 0


async def test_recorders_joining_leaving_and_crashing_lose_and_duplicate_nothing(
    stack: Stack, recorders: list[RecorderProcess], tmp_path: Path
) -> None:
    group = "rebalance"
    env = environment(stack, group)
    a, b, c = (recorder_process(tmp_path, name, env) for name in "abc")
    recorders += [a, b, c]
    await start(a)
    load = Load(stack.shared.kafka_bootstrap_servers, stack.topic, per_second=1500)
    load.start()
    try:
        for joining in (b, c):  # each join revokes partitions mid-batch under load
            await asyncio.sleep(1.5)
            await start(joining)
            assert await eventually(_committed(joining), 1, timeout=30) == 1
        await asyncio.sleep(1.5)
        assert await asyncio.to_thread(b.stop) == 0  # leaves the group: its partitions move at once
        await asyncio.sleep(1.5)
        a.kill()  # crashes mid-batch: c reads its uncommitted batch again
        await asyncio.sleep(1.5)
    finally:
        sent = await load.stop()

    # a's partitions move to c once a's session (10 s) has expired.
    found = await wait_stored(stack.database_url, sent, timeout=60)
    lag = lambda: group_lag(stack.shared.kafka_bootstrap_servers, group, stack.topic)  # noqa: E731
    assert await eventually(lag, 0, timeout=30) == 0
    after = await metrics(c)
    report(
        "rebalances",
        sent=len(sent),
        found=found,
        dead_lettered=dead_lettered(after),
        rebalances_seen_by_c=int(after["rebalances_total"]),
        kafka_level_duplicates_seen_by_c=int(after["events_already_stored_total"]),
    )
    assert (found.missing, found.duplicates) == (0, 0)
    assert after["rebalances_total"] >= 3


async def sent_at_least(load: Load, count: int) -> None:
    """Waits until the load has had `count` events acknowledged: a count, not a rate, so a busy
    machine makes the test longer, never wrong (the timeout only turns a stalled load into a
    failure)."""
    async with asyncio.timeout(120):
        while len(load.sent) < count:  # noqa: ASYNC110 (the load has no event to wait on)
            await asyncio.sleep(0.05)


def _committed(recorder: RecorderProcess) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return int((await metrics(recorder))["commits_total"] > 0)

    return probe
