"""Two services with workers started on one address (an operator's mistake: a second `make up`,
another checkout's): the second refuses to start, naming the address and the first's supervisor,
rather than bind beside it with SO_REUSEPORT and take a share of its connections with a model and
spool of its own (inference_service.port_lock). A service restarted beside its killed
supervisor's workers must still start: tests/integration/test_workers_restart.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from infra.devstack import KafkaBroker, PostgresServer
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from tests.integration.helpers import student
from tests.integration.test_workers import WORKERS, Stack

# Each call on a connection of its own: the kernel spreads connections, not calls.
CALLS = 8


async def stack(
    kafka: KafkaBroker, postgres: PostgresServer, model_path: Path, folder: Path, **env: str
) -> Stack:
    folder.mkdir()
    return await Stack.create(
        kafka,
        postgres,
        model_path,
        folder,
        "wa",
        STUDENTPERF_WORKERS=str(WORKERS),
        STUDENTPERF_LOG_FORMAT="text",
        **env,
    )


async def test_a_second_service_with_workers_on_a_taken_address_refuses_and_the_first_serves_on(
    kafka: KafkaBroker, postgres: PostgresServer, model_path: Path, tmp_path: Path
) -> None:
    first = await stack(kafka, postgres, model_path, tmp_path / "first")
    # A whole service of its own (topic, database, spool folder, health port): only the
    # address is the first's, so nothing else refuses it.
    second = await stack(
        kafka,
        postgres,
        model_path,
        tmp_path / "second",
        STUDENTPERF_LISTEN_ADDRESS=first.address,
    )
    try:
        first.inference.start()
        await first.all_serving()
        workers = await first.pids()

        second.inference.start()
        try:
            code: int | None = await second.inference.wait_async(60)
        except TimeoutError:
            code = None
        log = second.inference.log_tail(20)
        print(f"\nthe second service: exit status {code}; {second.inference.log_tail(1)}")
        assert code == 2, (
            f"the second service (exit status {code}) runs beside the first on "
            f"{first.address}, taking a share of its connections:\n{log}"
        )
        assert f"cannot listen on {first.address}" in log
        assert f"supervisor pid {first.inference.pid}" in log
        assert "Stop it, or set another address" in log

        for number in range(CALLS):
            async with grpc.aio.insecure_channel(first.address) as channel:
                reply = await api_grpc.PredictionServiceStub(channel).Predict(
                    api.PredictRequest(student=student(f"wa-{number}", previous_gpa=3.0)),
                    timeout=30,
                )
            assert reply.prediction.prediction_id
        await first.all_serving()
        assert await first.pids() == workers, "the first service's workers serve on, unreplaced"
    finally:
        await asyncio.gather(second.close(), first.close())
