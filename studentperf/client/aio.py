"""The asyncio client, on a grpc.aio channel: for services that already run an event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from studentperf.client import _base
from studentperf.client._base import Deadline, OnRetry, RetryState
from studentperf.client._channel import Pem, plan_channel
from studentperf.client.chunking import batch_limit, chunks
from studentperf.client.errors import ServiceError
from studentperf.client.inputs import StudentLike, as_student
from studentperf.client.retry import RetryPolicy
from studentperf.limits import DEFAULT_MAX_MESSAGE_BYTES
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc

R = TypeVar("R")


def connect(
    target: str,
    *,
    tls: bool = False,
    root_certificates: Pem | None = None,
    client_certificate: Pem | None = None,
    client_key: Pem | None = None,
    token: str | None = None,
    server_name: str | None = None,
    default_deadline_s: float = 10.0,
    retry: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> AsyncPredictionClient:
    """As `studentperf.client.connect`, for asyncio: `async with aio.connect(...) as client`.
    Call it inside the event loop that will use the client."""
    plan = plan_channel(
        target,
        tls=tls,
        root_certificates=root_certificates,
        client_certificate=client_certificate,
        client_key=client_key,
        token=token,
        server_name=server_name,
        max_message_bytes=max_message_bytes,
    )
    if plan.credentials is None:
        channel = grpc.aio.insecure_channel(plan.target, options=plan.options)
    else:
        channel = grpc.aio.secure_channel(plan.target, plan.credentials, options=plan.options)
    return AsyncPredictionClient(
        channel,
        metadata=plan.metadata,
        default_deadline_s=default_deadline_s,
        retry=retry or RetryPolicy(),
        on_retry=on_retry,
    )


class AsyncPredictionClient:
    """Typed calls to PredictionService; every failure is a `ServiceError`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        metadata: tuple[tuple[str, str], ...] = (),
        default_deadline_s: float = 10.0,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        Deadline(default_deadline_s)  # refuses a non-positive one now, not at the first call
        self._channel = channel
        self._stub = api_grpc.PredictionServiceStub(channel)
        self._metadata = metadata
        self._default_deadline_s = default_deadline_s
        self._retry = retry or RetryPolicy()
        self._on_retry = on_retry

    async def __aenter__(self) -> AsyncPredictionClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def predict(
        self,
        student: StudentLike | api.PredictRequest,
        *,
        top_factors: int = 0,
        term: str = "",
        timeout: float | None = None,
    ) -> api.PredictResponse:
        request = _base.predict_request(student, top_factors, term)
        return await self._call(
            "Predict", self._stub.Predict, request, timeout, api.PredictResponse
        )

    async def batch_predict(
        self,
        students: Sequence[StudentLike] | api.BatchPredictRequest,
        *,
        top_factors: int = 0,
        term: str = "",
        timeout: float | None = None,
    ) -> api.BatchPredictResponse:
        """One call: the server refuses more students than its batch limit (see predict_many)."""
        request = _base.batch_request(students, top_factors, term)
        return await self._call(
            "BatchPredict", self._stub.BatchPredict, request, timeout, api.BatchPredictResponse
        )

    async def model_info(self, *, timeout: float | None = None) -> api.ModelInfo:
        request = api.GetModelInfoRequest()
        return await self._call(
            "GetModelInfo", self._stub.GetModelInfo, request, timeout, api.ModelInfo
        )

    async def record_outcomes(
        self,
        outcomes: Sequence[api.Outcome] | api.RecordOutcomesRequest,
        *,
        timeout: float | None = None,
    ) -> api.RecordOutcomesResponse:
        request = _base.outcomes_request(outcomes)
        return await self._call(
            "RecordOutcomes",
            self._stub.RecordOutcomes,
            request,
            timeout,
            api.RecordOutcomesResponse,
        )

    async def erase_student(
        self, student_id: str, *, reason: str = "", timeout: float | None = None
    ) -> api.EraseStudentResponse:
        """Erases the student (see EraseStudent in the proto); the client needs the
        EraseStudent grant. Retried on UNAVAILABLE like every call: safe, a second erasure
        removes nothing more."""
        request = api.EraseStudentRequest(student_id=student_id, reason=reason)
        return await self._call(
            "EraseStudent", self._stub.EraseStudent, request, timeout, api.EraseStudentResponse
        )

    async def predict_many(
        self,
        students: Sequence[StudentLike],
        *,
        top_factors: int = 0,
        term: str = "",
        batch_size: int | None = None,
        concurrency: int = 4,
        timeout: float | None = None,
    ) -> list[api.BatchPredictResult]:
        """As PredictionClient.predict_many: in input order, `concurrency` calls at a time; when
        a call fails, calls not started are not made, those under way are finished, and
        PartlyAnswered is raised with every answer that came."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        size = batch_limit(top_factors, batch_size)
        parts = chunks([as_student(s) for s in students], size)
        gate = asyncio.Semaphore(concurrency)
        failures: list[ServiceError] = []

        async def run(index: int) -> list[api.BatchPredictResult] | None:
            async with gate:
                if failures:
                    return None  # not made
                try:
                    answer = await self.batch_predict(
                        parts[index].students, top_factors=top_factors, term=term, timeout=timeout
                    )
                    return _base.chunk_results(answer.results, parts[index])
                except ServiceError as error:
                    failures.append(error)
                    return None

        tasks = [asyncio.ensure_future(run(index)) for index in range(len(parts))]
        try:
            answers = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return _base.all_answered(_base.place(parts, answers, len(students)), failures)

    async def _call(
        self,
        method: str,
        multicallable: Callable[..., Awaitable[Any]],
        request: Any,
        timeout: float | None,
        kind: type[R],
    ) -> R:
        deadline = Deadline(self._default_deadline_s if timeout is None else timeout)
        state = RetryState(method, self._retry, deadline, self._on_retry)
        while True:
            try:
                answer = await multicallable(
                    request, timeout=state.next_timeout_s(), metadata=self._metadata or None
                )
            except grpc.RpcError as error:
                pause = state.pause_or_raise(error)
            else:
                assert isinstance(answer, kind)
                return answer
            await asyncio.sleep(pause)
