"""Two imports of one file for one term, with an erasure of a row's student between their
times: only the first copy of an import event in the log counts, whichever side of the erasure
it falls on, and the outcome kept does not depend on how the log fell into batches."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from infra.devstack.postgres import PostgresServer
from recorder_service.erasure import Erasure
from recorder_service.rows import import_staging_row
from recorder_service.store import PostgresStore
from studentperf.config import DatabaseRole
from studentperf.v1.import_event_pb2 import ImportEvent
from tests.integration.conftest import migrated_database
from trainer.import_events import import_event
from trainer.kaggle import KaggleRow

TERM = "2026-import"


@pytest.fixture(scope="module")
async def dsn(postgres: PostgresServer) -> str:
    return postgres.dsn(await migrated_database(postgres, "importcopies"))


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    url = dsn.replace(f"//{DatabaseRole.OWNER}@", f"//{DatabaseRole.RECORDER}@", 1)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    yield PostgresStore(pool)
    await pool.close()


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


def _at(minute: int) -> datetime:
    return datetime(2026, 3, 1, 12, minute, tzinfo=UTC)


async def _write(
    store: PostgresStore, log: list[tuple[int, ImportEvent] | Erasure], one_batch: bool
) -> None:
    if one_batch:
        rows = [import_staging_row(e[1], e[0]) for e in log if not isinstance(e, Erasure)]
        erasures = [e for e in log if isinstance(e, Erasure)]
        assert (await store.write(rows, erasures)).refused == []
        return
    for entry in log:
        if isinstance(entry, Erasure):
            await store.write([], [entry])
        else:
            assert (await store.write([import_staging_row(entry[1], entry[0])])).refused == []


@pytest.mark.parametrize("erasure_in_log", ["before the copies", "after the copies"])
@pytest.mark.parametrize("first_in_log", ["the later run's", "the earlier run's"])
async def test_the_first_copy_in_the_log_decides_however_the_log_fell_into_batches(
    store: PostgresStore, db: asyncpg.Connection, erasure_in_log: str, first_in_log: str
) -> None:
    """Run 1 stamped 12:00, before the erasure of the row's student (12:05); run 2 at 12:10.
    Kept when the later run's copy comes first in the log (it is after the erasure), gone with
    the erasure when the earlier run's does; the same in one batch as in batches of their own
    (in one batch, an erased later copy used to mark the event handled and drop the first)."""
    kept: dict[str, float | None] = {}
    for layout in ("one record per batch", "one batch"):
        sha = uuid.uuid4().hex * 2
        student = f"csv-{sha[:12]}-000002"
        row = KaggleRow(2, student, "female", "bachelor", "standard", "none", 50.0)
        run1 = import_event(row, file_sha256=sha, term=TERM, occurred_at=_at(0))
        run2 = import_event(row, file_sha256=sha, term=TERM, occurred_at=_at(10))
        assert run1.event_id == run2.event_id
        erasure = Erasure(str(uuid.uuid4()), student, _at(5), "registrar", "ticket-9")
        first, second = (run2, run1) if first_in_log == "the later run's" else (run1, run2)
        copies: list[tuple[int, ImportEvent] | Erasure] = [(1, first), (2, second)]
        log = [erasure, *copies] if erasure_in_log == "before the copies" else [*copies, erasure]
        await _write(store, log, one_batch=layout == "one batch")
        kept[layout] = await db.fetchval(
            "SELECT final_score FROM outcomes WHERE student_id = $1 AND term = $2", student, TERM
        )
    print(f"\nfirst in the log {first_in_log}, erasure {erasure_in_log}: kept {kept}")
    expected = 50.0 if first_in_log == "the later run's" else None
    assert kept == {"one record per batch": expected, "one batch": expected}
