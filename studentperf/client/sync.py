"""The blocking client, on a grpc (sync) channel: for scripts, web handlers and worker threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
) -> PredictionClient:
    """A client of the prediction service at `target` (host:port).

    `tls=True` verifies the server against `root_certificates` (PEM bytes or a file; None: the
    system's roots); `client_certificate` + `client_key` add a client certificate (mutual TLS).
    `token` is sent as `authorization: Bearer <token>`: as call credentials over TLS, or as
    plain metadata to this machine only. `default_deadline_s` bounds each call, retries
    included, unless the call passes its own `timeout`. `retry` defaults to `RetryPolicy()`:
    UNAVAILABLE only, 5 attempts.
    """
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
        channel = grpc.insecure_channel(plan.target, options=plan.options)
    else:
        channel = grpc.secure_channel(plan.target, plan.credentials, options=plan.options)
    return PredictionClient(
        channel,
        metadata=plan.metadata,
        default_deadline_s=default_deadline_s,
        retry=retry or RetryPolicy(),
        on_retry=on_retry,
    )


class PredictionClient:
    """Typed calls to PredictionService; every failure is a `ServiceError`."""

    def __init__(
        self,
        channel: grpc.Channel,
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

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def predict(
        self,
        student: StudentLike | api.PredictRequest,
        *,
        top_factors: int = 0,
        term: str = "",
        timeout: float | None = None,
    ) -> api.PredictResponse:
        request = _base.predict_request(student, top_factors, term)
        return self._call("Predict", self._stub.Predict, request, timeout, api.PredictResponse)

    def batch_predict(
        self,
        students: Sequence[StudentLike] | api.BatchPredictRequest,
        *,
        top_factors: int = 0,
        term: str = "",
        timeout: float | None = None,
    ) -> api.BatchPredictResponse:
        """One call: the server refuses more students than its batch limit (see predict_many)."""
        request = _base.batch_request(students, top_factors, term)
        return self._call(
            "BatchPredict", self._stub.BatchPredict, request, timeout, api.BatchPredictResponse
        )

    def model_info(self, *, timeout: float | None = None) -> api.ModelInfo:
        request = api.GetModelInfoRequest()
        return self._call("GetModelInfo", self._stub.GetModelInfo, request, timeout, api.ModelInfo)

    def record_outcomes(
        self,
        outcomes: Sequence[api.Outcome] | api.RecordOutcomesRequest,
        *,
        timeout: float | None = None,
    ) -> api.RecordOutcomesResponse:
        request = _base.outcomes_request(outcomes)
        return self._call(
            "RecordOutcomes",
            self._stub.RecordOutcomes,
            request,
            timeout,
            api.RecordOutcomesResponse,
        )

    def erase_student(
        self, student_id: str, *, reason: str = "", timeout: float | None = None
    ) -> api.EraseStudentResponse:
        """Erases the student (see EraseStudent in the proto); the client needs the
        EraseStudent grant. Retried on UNAVAILABLE like every call: safe, a second erasure
        removes nothing more."""
        request = api.EraseStudentRequest(student_id=student_id, reason=reason)
        return self._call(
            "EraseStudent", self._stub.EraseStudent, request, timeout, api.EraseStudentResponse
        )

    def predict_many(
        self,
        students: Sequence[StudentLike],
        *,
        top_factors: int = 0,
        term: str = "",
        batch_size: int | None = None,
        concurrency: int = 4,
        timeout: float | None = None,
    ) -> list[api.BatchPredictResult]:
        """Any number of students: BatchPredict calls of at most `batch_size` (default: the
        server's default limit) and of at most the server's request size, `concurrency` at a
        time; one result per student, in input order, error paths numbered as in `students`.
        `timeout` bounds each call. When a call fails, calls not started by then are not made,
        those under way are finished, and PartlyAnswered (a ServiceError) is raised with every
        answer that came (those students' predictions are recorded: predicting them again
        records them again)."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        size = batch_limit(top_factors, batch_size)
        parts = chunks([as_student(s) for s in students], size)

        failures: list[ServiceError] = []
        stopping = threading.Event()  # set by the first failure, seen by every later start

        def run(index: int) -> list[api.BatchPredictResult] | None:
            if stopping.is_set():
                return None  # not made
            try:
                answer = self.batch_predict(
                    parts[index].students, top_factors=top_factors, term=term, timeout=timeout
                )
                return _base.chunk_results(answer.results, parts[index])
            except ServiceError as error:
                failures.append(error)
                stopping.set()
                return None

        with ThreadPoolExecutor(max_workers=min(concurrency, max(len(parts), 1))) as pool:
            futures = [pool.submit(run, index) for index in range(len(parts))]
            try:
                answers = [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return _base.all_answered(_base.place(parts, answers, len(students)), failures)

    def _call(
        self,
        method: str,
        multicallable: Callable[..., Any],
        request: Any,
        timeout: float | None,
        kind: type[R],
    ) -> R:
        deadline = Deadline(self._default_deadline_s if timeout is None else timeout)
        state = RetryState(method, self._retry, deadline, self._on_retry)
        while True:
            try:
                answer = multicallable(
                    request, timeout=state.next_timeout_s(), metadata=self._metadata or None
                )
            except grpc.RpcError as error:
                time.sleep(state.pause_or_raise(error))
            else:
                assert isinstance(answer, kind)
                return answer
