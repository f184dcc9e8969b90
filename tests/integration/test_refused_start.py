"""A start refused part-way lets go of everything it took before the refusal.

By then a start may hold the model follower's database connection (`STUDENTPERF_MODEL_SOURCE=
database`) and the spool folder's lock. A worker's supervisor, or a test, may start a server
again in the same process: a lock still held refuses that start as "in use by another process",
and each refused start would keep one more connection of the inference role's few.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from inference_service.server import start_server
from studentperf.config import ConfigError, DatabaseRole
from studentperf.durable import FolderInUse
from tests.integration.conftest import Stack, inference_settings


async def follower_connections(stack: Stack) -> int:
    """The inference role's connections to the stack's database (the follower's, here: the
    history store reads as another role and connects on the first history call)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE usename = $1 AND datname = current_database()",
                str(DatabaseRole.INFERENCE),
            )
        )
    finally:
        await conn.close()


async def settled_connections(stack: Stack, expected: int) -> int:
    """The count once it is `expected`, or after 10 s: a backend whose client closed ends a
    moment later, one that was left open never does."""
    found = await follower_connections(stack)
    for _ in range(100):
        if found == expected:
            break
        await asyncio.sleep(0.1)
        found = await follower_connections(stack)
    return found


async def test_a_start_refused_for_its_token_table_lets_go_of_its_spool_and_connection(
    stack: Stack, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    before = await follower_connections(stack)
    refused = inference_settings(
        stack, spool, model_source="database", auth_tokens="not-a-valid-line"
    )
    with pytest.raises(ConfigError, match="STUDENTPERF_AUTH_TOKENS") as refusal:
        await start_server(refused)
    # Checked while the refusal is at hand, as a caller reporting it holds it: its traceback
    # keeps the start's locals, so the collector cannot close what the start left open.
    assert await settled_connections(stack, before) == before, refusal.traceback[-1]
    # The spool folder was let go: the same process serves on it at once.
    running = await start_server(inference_settings(stack, spool, model_source="database"))
    try:
        assert running.port > 0
        assert await settled_connections(stack, before + 1) == before + 1
    finally:
        await running.stop(grace_s=1)


async def test_a_start_refused_for_a_spool_folder_in_use_lets_go_of_its_connection(
    stack: Stack, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first = await start_server(inference_settings(stack, spool))  # folder source: no follower
    try:
        before = await follower_connections(stack)
        with pytest.raises(FolderInUse, match="in use by another process") as refusal:
            await start_server(inference_settings(stack, spool, model_source="database"))
        assert await settled_connections(stack, before) == before, refusal.traceback[-1]
    finally:
        await first.stop(grace_s=1)
