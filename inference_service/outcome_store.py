"""Outcomes written straight to PostgreSQL, over a pool opened on first use.

Outcomes are not predictions: nothing needs to happen between accepting one and storing it, so
a Kafka round trip would only add a second way to fail. The pool is opened lazily and every
failure to reach the database becomes OutcomesUnavailable, so the service starts, and
predicts, whether or not the database is up; the next RecordOutcomes call tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg

from inference_service.core import OutcomesUnavailable
from studentperf.config import mask_dsn
from studentperf.outcomes import OutcomeRow, StoredOutcome, store_outcomes

log = logging.getLogger(__name__)

SOURCE = "rpc"


class PostgresOutcomeStore:
    def __init__(
        self, database_url: str, *, timeout_s: float = 5.0, max_connections: int = 4
    ) -> None:
        self._dsn = database_url
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._max_connections,
                    timeout=self._timeout_s,
                    command_timeout=self._timeout_s,
                )
                log.info("outcomes: connected to %s", mask_dsn(self._dsn))
            return self._pool

    async def store(self, rows: Sequence[OutcomeRow]) -> list[StoredOutcome]:
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                pool = await self._get_pool()
                async with pool.acquire() as conn:
                    return await store_outcomes(conn, rows, source=SOURCE)
        except asyncpg.UndefinedTableError as err:
            raise OutcomesUnavailable(f"the database is not migrated: {err}") from err
        except (
            OSError,
            TimeoutError,
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError,
        ) as err:
            raise OutcomesUnavailable(
                f"database {mask_dsn(self._dsn)} not reachable ({type(err).__name__})"
            ) from err

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
