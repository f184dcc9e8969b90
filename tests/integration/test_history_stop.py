"""A service stops, within its bound and without an error, while the history database stops
answering: a failover can leave the pool's connections open and silent, and the graceful close
of them raised TimeoutError out of the service's stop."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from inference_service.core import HistoryUnavailable
from inference_service.history_store import PostgresHistoryStore
from inference_service.server import start_server
from studentperf.config import DatabaseRole
from studentperf.history import PageQuery
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.conftest import Stack, inference_settings
from tests.integration.helpers import backends_of


async def test_a_silent_history_database_does_not_hold_up_a_stop(
    stack: Stack, tmp_path: Path
) -> None:
    running = await start_server(inference_settings(stack, tmp_path / "spool"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        try:  # opens the pool; the answer does not matter
            await stub.ListStudentPredictions(api.ListStudentPredictionsRequest(student_id="hs-1"))
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
    # The history reader's connections.
    backends = await backends_of(stack.database_url, DatabaseRole.ANALYST.value)
    assert backends, "the history pool holds no connection to silence"
    for pid in backends:
        os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        await asyncio.wait_for(running.stop(grace_s=1), 60)
        took = time.monotonic() - started
    finally:
        for pid in backends:
            os.kill(pid, signal.SIGCONT)
    print(f"\na silent history database: the service stopped in {took:.1f} s")
    assert took < 10  # the grace, the publisher's flush, then the pool's bound of 5 s


async def test_a_closed_history_store_opens_no_new_pool(stack: Stack, tmp_path: Path) -> None:
    """A call grpc's stop left running (grpc/grpc#37239) reaches the store after its close: it
    is refused, rather than opening a pool that nobody would close."""
    settings = inference_settings(stack, tmp_path / "spool")
    store = PostgresHistoryStore(settings.history_database_url)
    assert await store.page(PageQuery(student_id="hs-2", limit=1)) is None  # no such student
    await store.close()
    with pytest.raises(HistoryUnavailable, match="stopping"):
        await store.page(PageQuery(student_id="hs-2", limit=1))
    # A backend outlives its client's goodbye by a moment; a pool's would stay for minutes.
    for _ in range(50):
        left = await backends_of(stack.database_url, DatabaseRole.ANALYST.value)
        if not left:
            break
        await asyncio.sleep(0.1)
    assert left == [], "the store holds connections after its close"
