"""Students' prediction histories, and erasures' audit rows, read from PostgreSQL, over a pool
opened on first use.

Read through its own DSN (Settings.history_database_url), by default as the read-only analyst
role: the inference service's own role may write outcomes but reads no prediction, and a read
that can write nothing cannot damage anything. As with outcomes, the pool is opened lazily and
every failure to reach the database becomes HistoryUnavailable: the service starts, and
predicts, without the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from inference_service.core import HistoryUnavailable
from studentperf.config import mask_dsn
from studentperf.database_errors import database_unavailable
from studentperf.history import PageQuery
from studentperf.persistence.erasure import ERASURE_REMOVED
from studentperf.persistence.history import fetch_page

log = logging.getLogger(__name__)

T = TypeVar("T")


# The bound of every statement, of opening the pool, and of closing it at a stop.
STATEMENT_TIMEOUT_S = 5.0


class PostgresHistoryStore:
    def __init__(
        self,
        database_url: str,
        *,
        timeout_s: float = STATEMENT_TIMEOUT_S,
        max_connections: int = 4,
    ) -> None:
        self._dsn = database_url
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._closed:
                # A call grpc's stop left running (grpc/grpc#37239) would open a pool that
                # nobody closes.
                raise HistoryUnavailable("the service is stopping")
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_connections,
                    timeout=self._timeout_s,
                    command_timeout=self._timeout_s,
                    # Reads only, whatever the role may do.
                    server_settings={"default_transaction_read_only": "on"},
                )
                log.info("history: connected to %s", mask_dsn(self._dsn))
            return self._pool

    async def page(self, query: PageQuery) -> Sequence[Mapping[str, Any]] | None:
        return await self._read(lambda conn: fetch_page(conn, query))

    async def erasure(self, event_id: str) -> Mapping[str, int] | None:
        """What the erasure `event_id` removed, as its audit row says (migration 0010): rows
        per table, and FACTS_CLEARED and EVENTS_SKIPPED (studentperf.erasure), which are no
        table; None until the recorder has applied it."""

        async def read(conn: asyncpg.Connection) -> Mapping[str, int] | None:
            found = await conn.fetchval(ERASURE_REMOVED, event_id)
            return None if found is None else {k: int(v) for k, v in json.loads(found).items()}

        return await self._read(read)

    async def _read(self, read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                pool = await self._get_pool()
                async with pool.acquire() as conn:
                    return await read(conn)
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as err:
            raise HistoryUnavailable(f"the database is not migrated: {err}") from err
        except asyncpg.InsufficientPrivilegeError as err:
            raise HistoryUnavailable(f"the history's role may not read it: {err}") from err
        except Exception as err:
            # A role the server does not know yet (28000) is as good as no database.
            refused = isinstance(err, asyncpg.InvalidAuthorizationSpecificationError)
            if not (refused or database_unavailable(err)):
                raise
            raise HistoryUnavailable(
                f"database {mask_dsn(self._dsn)} not reachable ({type(err).__name__})"
            ) from err

    async def close(self) -> None:
        """Closes the pool within the statement bound, and never raises for a database that
        stopped answering (a failover can leave the connections open and silent): asyncpg's
        graceful close then raised TimeoutError out of the service's stop, past what the stop
        does after it. Cut short, asyncpg terminates the connections. Calls made after it get
        HistoryUnavailable."""
        self._closed = True
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._opening:  # a pool being opened now is closed too
                    pool, self._pool = self._pool, None
                    if pool is not None:
                        await pool.close()
        except TimeoutError:
            log.warning(
                "history: %s did not answer the close within %g s; connections dropped",
                mask_dsn(self._dsn),
                self._timeout_s,
            )
