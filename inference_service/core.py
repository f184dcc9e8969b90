"""The prediction use case, free of transport: check, predict, publish, answer.

Used by the gRPC servicer; the model and the event publisher come in through small
protocols so unit tests can pass fakes and integration tests the real broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from inference_service.encoding import EncodedStudent, FieldViolation, InvalidInput, encode_student
from studentperf import envelope
from studentperf.envelope import KafkaRecord
from studentperf.features import FeatureValue
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import ModelInfo, Prediction
from studentperf.v1.student_pb2 import Student


class PublishUnavailable(Exception):
    """The events could not be handed off for recording in time; nothing is promised."""


class EventPublisher(Protocol):
    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        """Returns once every record is acknowledged; raises PublishUnavailable otherwise."""


class Model(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def pass_mark(self) -> float: ...

    def predict(
        self, rows: Sequence[tuple[FeatureValue, ...]]
    ) -> tuple[Sequence[float], Sequence[float]]:
        """Final scores (0-100) and pass probabilities (0-1), one of each per row."""

    def info(self) -> ModelInfo:
        """What GetModelInfo answers: version, training time, held-out metrics."""


@dataclass(frozen=True, slots=True)
class _Item:
    student: Student
    encoded: EncodedStudent


class PredictionCore:
    def __init__(
        self,
        model: Model,
        publisher: EventPublisher,
        *,
        max_batch_size: int,
        now: Callable[[], Timestamp] | None = None,
    ) -> None:
        self._model = model
        self._publisher = publisher
        self._max_batch_size = max_batch_size
        self._now = now or _utc_now
        # Calls between their model work and their answer: what a graceful stop waits for;
        # and those cancelled there (a deadline, a client gone, a stop that ran out of grace).
        self.in_flight = 0
        self.cut_off = 0

    @property
    def model(self) -> Model:
        return self._model

    async def predict(self, student: Student | None) -> Prediction:
        """One student; raises InvalidInput or PublishUnavailable."""
        encoded = encode_student(student, "student")
        assert student is not None  # encode_student refuses None
        [prediction] = await self._predict_and_publish([_Item(student, encoded)])
        return prediction

    async def predict_batch(self, students: Sequence[Student]) -> list[Prediction | InvalidInput]:
        """One answer per student, in order: a prediction, or why that student was refused."""
        if len(students) > self._max_batch_size:
            raise InvalidInput(
                [
                    FieldViolation(
                        "students",
                        f"at most {self._max_batch_size} students per call, got {len(students)}",
                    )
                ]
            )
        answers: list[Prediction | InvalidInput | None] = []  # None: the model's to answer
        valid: list[_Item] = []
        for index, student in enumerate(students):
            try:
                encoded = encode_student(student, f"students[{index}]")
            except InvalidInput as refused:
                answers.append(refused)
            else:
                valid.append(_Item(student, encoded))
                answers.append(None)
        predictions = iter(await self._predict_and_publish(valid) if valid else [])
        return [next(predictions) if answer is None else answer for answer in answers]

    async def _predict_and_publish(self, items: Sequence[_Item]) -> list[Prediction]:
        self.in_flight += 1
        try:
            return await self._predict_and_publish_counted(items)
        except asyncio.CancelledError:
            self.cut_off += 1
            raise
        finally:
            self.in_flight -= 1

    async def _predict_and_publish_counted(self, items: Sequence[_Item]) -> list[Prediction]:
        model = self._model
        # Model work runs off the event loop so a large batch does not stall other calls.
        scores, probabilities = await asyncio.to_thread(
            model.predict, [item.encoded.features for item in items]
        )
        occurred_at = self._now()
        predictions: list[Prediction] = []
        records: list[KafkaRecord] = []
        for item, score, probability in zip(items, scores, probabilities, strict=True):
            prediction = Prediction(
                prediction_id=str(uuid.uuid4()),
                predicted_final_score=score,
                pass_probability=probability,
                predicted_pass=probability >= 0.5,
                model_version=model.version,
                imputed_fields=item.encoded.imputed_fields,
                pass_mark=model.pass_mark,
            )
            event = PredictionEvent(
                schema_version=envelope.SCHEMA_VERSION,
                event_id=prediction.prediction_id,
                occurred_at=occurred_at,
                input=item.student,
                prediction=prediction,
            )
            predictions.append(prediction)
            records.append(envelope.encode(event))
        await self._publisher.publish(records)
        return predictions


def _utc_now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp
