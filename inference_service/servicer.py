"""The gRPC face of the prediction core: translate the message, call the core, translate back."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from google.rpc import code_pb2

from inference_service.core import PredictionCore
from inference_service.encoding import InvalidInput
from inference_service.metrics import InferenceMetrics
from inference_service.status import bad_request, map_errors
from studentperf.outcomes import StoredOutcome
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class PredictionServicer(api_grpc.PredictionServiceServicer):
    def __init__(self, core: PredictionCore, metrics: InferenceMetrics | None = None) -> None:
        self._core = core
        self._metrics = metrics

    @property
    def metrics(self) -> InferenceMetrics | None:
        return self._metrics

    @map_errors
    async def Predict(self, request: api.PredictRequest, context: Context) -> api.PredictResponse:
        request.DiscardUnknownFields()  # the event carries the student as received: known fields
        student = request.student if request.HasField("student") else None
        prediction = await self._core.predict(student, top_factors=request.top_factors)
        return api.PredictResponse(prediction=prediction)

    @map_errors
    async def BatchPredict(
        self, request: api.BatchPredictRequest, context: Context
    ) -> api.BatchPredictResponse:
        request.DiscardUnknownFields()
        answers = await self._core.predict_batch(request.students, top_factors=request.top_factors)
        return api.BatchPredictResponse(results=[_result(answer) for answer in answers])

    @map_errors
    async def GetModelInfo(
        self, request: api.GetModelInfoRequest, context: Context
    ) -> api.ModelInfo:
        return self._core.model.info()

    @map_errors
    async def RecordOutcomes(
        self, request: api.RecordOutcomesRequest, context: Context
    ) -> api.RecordOutcomesResponse:
        answers = await self._core.record_outcomes(request.outcomes)
        return api.RecordOutcomesResponse(results=[_outcome_result(a) for a in answers])


def _item_error(what: str, error: InvalidInput) -> api.ItemError:
    return api.ItemError(
        code=code_pb2.INVALID_ARGUMENT,
        message=f"invalid {what}: {error}",
        bad_request=bad_request(error),
    )


def _result(answer: api.Prediction | InvalidInput) -> api.BatchPredictResult:
    if isinstance(answer, InvalidInput):
        return api.BatchPredictResult(error=_item_error("student", answer))
    return api.BatchPredictResult(prediction=answer)


def _outcome_result(answer: StoredOutcome | InvalidInput) -> api.RecordOutcomeResult:
    if isinstance(answer, InvalidInput):
        return api.RecordOutcomeResult(error=_item_error("outcome", answer))
    return api.RecordOutcomeResult(
        stored=api.OutcomeStored(replaced=answer.replaced, student_added=answer.student_added)
    )
