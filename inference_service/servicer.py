"""The gRPC face of the prediction core: decode the request, call the core, translate back.

Each method gets its request as the bytes that came and decodes them itself, rather than
through the generated handlers' deserializer, because:
- bytes that are not the message (a string that is not UTF-8, garbage) are the caller's error,
  INVALID_ARGUMENT, counted like every other answer; a deserializer's error reaches the caller
  as UNKNOWN and is counted nowhere;
- the token check (inference_service.auth) runs before anything is decoded;
- decoding is where a request costs the most memory for its size, so it happens inside the
  budget of request bytes in flight (inference_service.inflight).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2

from inference_service.auth import Client, client_name
from inference_service.core import (
    AcceptedOutcome,
    ErasureAnswer,
    HistoryUnavailable,
    PredictionCore,
    PublishUnavailable,
    StudentNotFound,
)
from inference_service.encoding import InvalidInput
from inference_service.grpc_errors import bad_request, map_errors
from inference_service.inflight import InFlightBytes
from inference_service.metrics import InferenceMetrics
from studentperf.erasure import EVENTS_SKIPPED, FACTS_CLEARED
from studentperf.v1 import prediction_service_pb2 as api

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
M = TypeVar("M", bound=Message)
R = TypeVar("R")

SERVICE = api.DESCRIPTOR.services_by_name["PredictionService"]
UNDECODABLE = "it could not be decoded (malformed protobuf, or a string that is not UTF-8)"
# An item's refusal names every bad field and its rule in bad_request; its message shows this
# many and counts the rest, so that a full batch of items breaking every rule is answered within
# the response limit (studentperf.limits.LARGEST_ANSWER_BYTES), not refused whole.
MESSAGE_VIOLATIONS = 2


class PredictionServicer:
    def __init__(
        self,
        core: PredictionCore,
        metrics: InferenceMetrics | None = None,
        in_flight: InFlightBytes | None = None,
        clients: Mapping[bytes, Client] | None = None,
    ) -> None:
        """`clients`: the token table (inference_service.auth), which names who asked for an
        erasure; None when the server requires no token."""
        self._core = core
        self._clients = clients or {}
        self._metrics = metrics
        # None: no budget, every request is decoded at once.
        self._in_flight = in_flight or InFlightBytes(1 << 62)

    @property
    def metrics(self) -> InferenceMetrics | None:
        return self._metrics

    @map_errors
    async def Predict(self, request: bytes, context: Context) -> api.PredictResponse:
        if self._in_flight.is_small(len(request)):
            # Every Predict a client means: nothing to hold, and `_forgetting_frames` spelled
            # out, so that the call's task resumes through two coroutines fewer.
            try:
                return await self._predict(request, context)
            except _EXPECTED as error:
                _drop_tracebacks(error)
                raise
        async with self._in_flight.hold(len(request)):
            return await _forgetting_frames(self._predict(request, context))

    @map_errors
    async def BatchPredict(self, request: bytes, context: Context) -> api.BatchPredictResponse:
        async with self._in_flight.hold(len(request)):
            return await _forgetting_frames(self._batch_predict(request, context))

    @map_errors
    async def GetModelInfo(self, request: bytes, context: Context) -> api.ModelInfo:
        await _decode(api.GetModelInfoRequest, request, context)
        return self._core.model.info()

    @map_errors
    async def RecordOutcomes(self, request: bytes, context: Context) -> api.RecordOutcomesResponse:
        async with self._in_flight.hold(len(request)):
            return await _forgetting_frames(self._record_outcomes(request, context))

    @map_errors
    async def ListStudentPredictions(
        self, request: bytes, context: Context
    ) -> api.ListStudentPredictionsResponse:
        message = await _decode(api.ListStudentPredictionsRequest, request, context)
        return await _forgetting_frames(self._core.list_student_predictions(message))

    @map_errors
    async def EraseStudent(self, request: bytes, context: Context) -> api.EraseStudentResponse:
        message = await _decode(api.EraseStudentRequest, request, context)
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        answer = await _forgetting_frames(
            self._core.erase_student(
                message.student_id,
                reason=message.reason,
                requested_by=client_name(self._clients, metadata),
            )
        )
        return _erasure_response(answer)

    async def _predict(self, request: bytes, context: Context) -> api.PredictResponse:
        message = await _decode(api.PredictRequest, request, context)
        message.DiscardUnknownFields()  # the event carries the student as received: known fields
        student = message.student if message.HasField("student") else None
        prediction = await self._core.predict(
            student, top_factors=message.top_factors, term=message.term
        )
        return api.PredictResponse(prediction=prediction)

    async def _batch_predict(self, request: bytes, context: Context) -> api.BatchPredictResponse:
        message = await _decode(api.BatchPredictRequest, request, context)
        message.DiscardUnknownFields()
        answers = await self._core.predict_batch(
            message.students, top_factors=message.top_factors, term=message.term
        )
        return api.BatchPredictResponse(results=[_result(answer) for answer in answers])

    async def _record_outcomes(
        self, request: bytes, context: Context
    ) -> api.RecordOutcomesResponse:
        message = await _decode(api.RecordOutcomesRequest, request, context)
        answers = await self._core.record_outcomes(message.outcomes)
        return api.RecordOutcomesResponse(results=[_outcome_result(a) for a in answers])


# What a call may end with by design; anything else keeps its traceback for the log.
_EXPECTED = (
    InvalidInput,
    PublishUnavailable,
    HistoryUnavailable,
    StudentNotFound,
    asyncio.CancelledError,
    grpc.aio.AbortError,
)


async def _forgetting_frames(work: Awaitable[R]) -> R:
    """`work`'s result; or the expected exception it raised, without the frames it came
    through, and so without their locals: the decoded request among them. gRPC's handler keeps
    the exception in a reference cycle, which only the garbage collector frees, on a schedule
    counted in objects: a large request's memory would outlive its call, for dozens of calls
    (1 GB after 100 calls of empty students, measured)."""
    try:
        return await work
    except _EXPECTED as error:
        _drop_tracebacks(error)
        raise  # from here: a bare raise keeps the emptied traceback


def _drop_tracebacks(error: BaseException) -> None:
    seen: set[int] = set()
    found: BaseException | None = error
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        found.__traceback__ = None
        found = found.__cause__ or found.__context__


def add_to_server(servicer: PredictionServicer, server: grpc.aio.Server) -> None:
    """Serves `servicer`'s methods on `server`, each taking its request undecoded (the
    generated add_PredictionServiceServicer_to_server decodes before the method runs)."""
    responses: dict[str, tuple[Callable[[bytes, Context], Awaitable[Message]], type[Message]]] = {
        "Predict": (servicer.Predict, api.PredictResponse),
        "BatchPredict": (servicer.BatchPredict, api.BatchPredictResponse),
        "GetModelInfo": (servicer.GetModelInfo, api.ModelInfo),
        "RecordOutcomes": (servicer.RecordOutcomes, api.RecordOutcomesResponse),
        "ListStudentPredictions": (
            servicer.ListStudentPredictions,
            api.ListStudentPredictionsResponse,
        ),
        "EraseStudent": (servicer.EraseStudent, api.EraseStudentResponse),
    }
    missing = set(SERVICE.methods_by_name) - set(responses)
    if missing:
        raise AssertionError(f"no handler for {sorted(missing)}")
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            method, response_serializer=response.SerializeToString
        )
        for name, (method, response) in responses.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


async def _decode(message_type: type[M], data: bytes, context: Context) -> M:
    try:
        return message_type.FromString(data)
    except DecodeError:
        await _abort_undecodable(message_type, context)


async def _abort_undecodable(message_type: type[Message], context: Context) -> NoReturn:
    name = message_type.DESCRIPTOR.full_name
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {name}: {UNDECODABLE}"
    )
    raise AssertionError("unreachable: abort raises")


def _item_error(what: str, error: InvalidInput) -> api.ItemError:
    message = error.describe(MESSAGE_VIOLATIONS)
    if (more := len(error.violations) - MESSAGE_VIOLATIONS) > 0:
        message += f"; and {more} more (bad_request names each)"
    return api.ItemError(
        code=code_pb2.INVALID_ARGUMENT,
        message=f"invalid {what}: {message}",
        bad_request=bad_request(error),
    )


def _result(answer: api.Prediction | InvalidInput) -> api.BatchPredictResult:
    if isinstance(answer, InvalidInput):
        return api.BatchPredictResult(error=_item_error("student", answer))
    return api.BatchPredictResult(prediction=answer)


def _outcome_result(answer: AcceptedOutcome | InvalidInput) -> api.RecordOutcomeResult:
    if isinstance(answer, InvalidInput):
        return api.RecordOutcomeResult(error=_item_error("outcome", answer))
    # replaced and student_added are deprecated and left false: not known until recorded.
    return api.RecordOutcomeResult(stored=api.OutcomeStored(event_id=answer.event_id))


def _erasure_response(answer: ErasureAnswer) -> api.EraseStudentResponse:
    if answer.removed is None:
        return api.EraseStudentResponse(
            erasure_id=answer.erasure_id,
            summary="erasure accepted, not yet confirmed: the recorder will apply it (its audit "
            "row in table erasures will say what it removed)",
        )
    removed = {table: count for table, count in sorted(answer.removed.items()) if count}
    return api.EraseStudentResponse(
        erasure_id=answer.erasure_id, confirmed=True, removed=removed, summary=_summary(removed)
    )


def _summary(removed: Mapping[str, int]) -> str:
    """What the erasure removed, in words: rows per table, the current facts it cleared from a
    students row a later enrolment keeps (`student_facts`), and the student's events it found
    not yet stored and skipped (`events_skipped`); neither of those two is a table."""
    parts = [
        f"{count} from {table}"
        for table, count in removed.items()
        if table not in (FACTS_CLEARED, EVENTS_SKIPPED)
    ]
    said = ["removed " + ", ".join(parts)] if parts else []
    if removed.get(FACTS_CLEARED):
        said.append("cleared the student's facts given before the erasure")
    if skipped := removed.get(EVENTS_SKIPPED):
        # "removed nothing" alone would tell the caller the student had no data; the events
        # were the student's, erased before the recorder stored them.
        if not said:
            said.append("removed nothing stored")
        said.append(f"skipped {skipped} event(s) of the student not yet recorded")
    return "; ".join(said) or "removed nothing"
