"""Retention: predictions older than STUDENTPERF_RETENTION_DAYS are deleted, with the profiles,
academic records and bare students nothing refers to any more (off by default: 0 days).

The recorder runs it every STUDENTPERF_RETENTION_INTERVAL_S while it records; `make retention`
(`python -m recorder_service.retention`) runs it once and prints what it removed per table.
Both delete in batches of STUDENTPERF_RETENTION_BATCH predictions, one short transaction
each (recorder_service/store.py, `remove_batch`), so no lock is held for long and the
recorder's writes go on in between. docs/recorder.md, "Retention", says why batches rather
than monthly partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from recorder_service.settings import MAX_RETENTION_DAYS, Settings
from recorder_service.store import Removed, describe, is_transient, remove_batch
from studentperf.config import ConfigError, configure_logging, mask_dsn

log = logging.getLogger(__name__)

TABLES = ("predictions", "student_profiles", "academic_records", "students")
# Foreign-key conflicts in a row after which a run gives up (and the next one tries again).
MAX_CONFLICTS = 5


def cutoff_for(days: int, now: datetime | None = None) -> datetime:
    """Predictions made before this instant are expired."""
    return (now or datetime.now(UTC)) - timedelta(days=days)


async def remove_expired(
    pool: asyncpg.Pool, cutoff: datetime, batch: int, stop: asyncio.Event | None = None
) -> Removed:
    """Deletes batch after batch until none is left before `cutoff` (or `stop` is set)."""
    removed = Removed()
    conflicts = 0
    while stop is None or not stop.is_set():
        async with pool.acquire() as conn:
            try:
                done = await remove_batch(conn, cutoff, batch)
            except asyncpg.ForeignKeyViolationError:
                # The recorder has just stored a prediction that uses a profile, record or
                # student this batch found unused: the batch is undone whole, and tried again.
                # Again and again means a reference retention does not know: give up the run.
                conflicts += 1
                if conflicts >= MAX_CONFLICTS:
                    raise
                log.info("retention: a batch met a concurrent write; trying it again")
                continue
        conflicts = 0
        removed.add(done)
        if done.predictions < batch:
            break
    return removed


def summary(removed: Removed) -> str:
    return ", ".join(f"{table} {getattr(removed, table):,}" for table in TABLES)


async def run_schedule(pool: asyncpg.Pool, settings: Settings, stop: asyncio.Event) -> None:
    """The recorder's retention job: a run at start-up, then one every interval, until `stop`.
    A failed run is logged and waits for the next; it never stops the recorder."""
    while not stop.is_set():
        cutoff = cutoff_for(settings.retention_days)
        started = time.monotonic()
        try:
            removed = await remove_expired(pool, cutoff, settings.retention_batch, stop)
        except Exception as error:  # the recorder outlives any database trouble
            level = logging.WARNING if is_transient(error) else logging.ERROR
            log.log(
                level,
                "retention: run failed, next in %d s: %s",
                settings.retention_interval_s,
                describe(error),
            )
        else:
            log.info(
                "retention: removed before %s: %s (%.1f s)",
                cutoff.isoformat(timespec="seconds"),
                summary(removed),
                time.monotonic() - started,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.retention_interval_s)


async def _once(database_url: str, days: int, batch: int) -> Removed:
    cutoff = cutoff_for(days)
    print(
        f"removing predictions made before {cutoff.isoformat(timespec='seconds')} "
        f"({days} days) from {mask_dsn(database_url)}"
    )
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as pool:
        return await remove_expired(pool, cutoff, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    try:
        configure_logging(os.environ, default_format="text")
        settings = Settings.from_env(os.environ)
    except ConfigError as error:
        parser.error(str(error))
    parser.add_argument(
        "--days",
        type=int,
        default=settings.retention_days,
        help="remove predictions older than this (default: $STUDENTPERF_RETENTION_DAYS)",
    )
    args = parser.parse_args()
    if args.days > MAX_RETENTION_DAYS:
        parser.error(f"--days must be at most {MAX_RETENTION_DAYS} (a hundred years)")
    if args.days <= 0:
        print(
            "retention is off (STUDENTPERF_RETENTION_DAYS=0): nothing removed; "
            "set it, or pass DAYS=n to make retention"
        )
        return
    started = time.monotonic()
    try:
        removed = asyncio.run(
            _once(settings.shared.database_url, args.days, settings.retention_batch)
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        # A deadlock lost to the recorder's writes, or the database away: what earlier batches
        # removed stays removed, and the next run takes up the rest.
        print(
            f"retention stopped early: {describe(error)}; what it removed before stays "
            "removed, run it again for the rest",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    for table in TABLES:
        print(f"  {table:<17} {getattr(removed, table):>10,} removed")
    print(f"done in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
