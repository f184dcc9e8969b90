"""Waiting until the recorder has stored an import's rows (`make import`'s --wait).

The recorder notes the id of every import event it stored in `imported_rows` (migration 0011),
which the importer's role may read and nothing else. The wait polls for the ids not seen yet
and gives up only when none arrived for `stall_timeout_s`: a large file takes as long as the
recorder needs, a stopped recorder (or a database away) is reported. Giving up loses nothing:
the events are in Kafka, and the recorder stores them when it runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import asyncpg

from studentperf.database_errors import database_unavailable
from studentperf.persistence.imports import FIND_IMPORTED
from trainer.db_source import DatabaseUnavailable, connect

# Ids per query: one query's parameter stays small however large the file.
_CHUNK = 10_000


class WaitGaveUp(Exception):
    """No row was stored for the stall timeout; `stored` of `total` were."""

    def __init__(self, stored: int, total: int, why: str) -> None:
        super().__init__(why)
        self.stored = stored
        self.total = total


async def _found(conn: asyncpg.Connection, ids: list[str]) -> set[str]:
    seen: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        rows = await conn.fetch(FIND_IMPORTED, ids[start : start + _CHUNK])
        seen.update(r["event_id"] for r in rows)
    return seen


async def wait_until_stored(
    database_url: str,
    event_ids: Sequence[str],
    *,
    stall_timeout_s: float,
    poll_s: float = 0.5,
    progress: Callable[[int, int], None] = lambda stored, total: None,
) -> int:
    """Returns once every id is in `imported_rows` (their number); raises WaitGaveUp.
    `progress` hears (stored, total) whenever more were found."""
    pending = set(event_ids)
    total = len(pending)
    last_news = time.monotonic()
    problem = ""
    conn: asyncpg.Connection | None = None
    try:
        while pending:
            try:
                if conn is None:
                    conn = await connect(database_url)
                seen = await _found(conn, list(pending))
                problem = "the recorder stored none of the remaining rows"
            except asyncpg.InsufficientPrivilegeError as err:
                raise WaitGaveUp(total - len(pending), total, f"cannot read: {err}") from err
            except Exception as err:
                # Any refusal while it (re)connects and polls: the next round tries anew.
                if not isinstance(err, DatabaseUnavailable) and not database_unavailable(
                    err, connecting=True
                ):
                    raise
                problem = f"the database did not answer ({type(err).__name__})"
                if conn is not None:
                    conn.terminate()
                    conn = None
                seen = set()
            if seen:
                pending -= seen
                last_news = time.monotonic()
                progress(total - len(pending), total)
            elif time.monotonic() - last_news > stall_timeout_s:
                raise WaitGaveUp(
                    total - len(pending), total, f"{problem} for {stall_timeout_s:g} s"
                )
            if pending:
                await asyncio.sleep(poll_s)
    finally:
        if conn is not None:
            await conn.close()
    return total
