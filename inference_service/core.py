"""The prediction use case, free of transport: check, predict, publish, answer.

Used by the gRPC servicer; the model, the event publisher and the history store come in
through small protocols so unit tests can pass fakes and integration tests the real broker.
Outcomes are checked and published as events too, with the same promise as predictions. The
model can be swapped while serving (`use_model`): each call reads it once, so a call in flight
finishes with the model it started with, and its answer and event name that model's version.

The protocols it meets the outside through, and its answers and errors, are in
inference_service.core_ports (re-exported here); a prediction's explanation is built by
inference_service.explanation; event ids and times come from inference_service.stamps.

Why this module is over 300 lines: it is one class, `PredictionCore`, whose four use cases
(predict, record outcomes, erase a student, read a history) share the calls-in-flight count a
graceful stop waits on, the model swap and the one publisher; the predict path, which is most
of it, is kept in one piece so its cost can be read top to bottom.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from google.protobuf.timestamp_pb2 import Timestamp

from inference_service import history
from inference_service.batcher import MicroBatcher
from inference_service.core_ports import (
    AcceptedOutcome,
    ErasureAnswer,
    ErasureAudit,
    EventPublisher,
    HeldEvents,
    HistoryStore,
    HistoryUnavailable,
    Model,
    PredictionMetrics,
    PublishUnavailable,
    ScoreContributions,
    StudentNotFound,
)
from inference_service.encoding import EncodedStudent, FieldViolation, InvalidInput, encode_student
from inference_service.explanation import explanation
from inference_service.outcomes import encode_outcomes
from inference_service.stamps import new_uuid4s, utc_now
from studentperf import envelope, tracing
from studentperf.envelope import KafkaRecord
from studentperf.erasure import ANONYMOUS, REASON_RULE, reason_is_valid
from studentperf.limits import MAX_EXPLAINED_BATCH
from studentperf.outcomes import TERM_FORMAT, OutcomeRow, term_is_valid
from studentperf.retry import Backoff
from studentperf.student_id import STUDENT_ID_RULE, student_id_is_valid
from studentperf.v1.erasure_event_pb2 import ErasureEvent
from studentperf.v1.outcome_event_pb2 import OutcomeEvent
from studentperf.v1.prediction_event_pb2 import PredictionEvent
from studentperf.v1.prediction_service_pb2 import (
    ListStudentPredictionsRequest,
    ListStudentPredictionsResponse,
    Outcome,
    Prediction,
)
from studentperf.v1.student_pb2 import Student

__all__ = [
    "AcceptedOutcome",
    "ErasureAnswer",
    "ErasureAudit",
    "EventPublisher",
    "HeldEvents",
    "HistoryStore",
    "HistoryUnavailable",
    "Model",
    "PredictionCore",
    "PredictionMetrics",
    "PublishUnavailable",
    "ScoreContributions",
    "StudentNotFound",
    "explanation",
    "new_uuid4s",
]


# Not frozen: a frozen dataclass sets each field through object.__setattr__, several times the
# cost of a plain one, and one is made per student on every Predict.
@dataclass(slots=True)
class _Item:
    student: Student
    encoded: EncodedStudent
    # The calling request's (studentperf.tracing): a micro-batch mixes several calls' items.
    trace_id: str | None
    term: str  # the term predicted for; "" for none


class PredictionCore:
    def __init__(
        self,
        model: Model,
        publisher: EventPublisher,
        *,
        max_batch_size: int,
        now: Callable[[], Timestamp] | None = None,
        microbatch_wait_s: float = 0.0,
        microbatch_max: int = 256,
        metrics: PredictionMetrics | None = None,
        current_term: str = "",
        history: HistoryStore | None = None,
        held_events: HeldEvents | None = None,
        erasure_audit: ErasureAudit | None = None,
        erasure_wait_s: float = 0.0,
    ) -> None:
        """`current_term`: the term of a prediction whose request names none ("" for none).
        `erasure_wait_s`: how long EraseStudent waits for the recorder's audit row."""
        self._held_events = held_events
        self._erasure_audit = erasure_audit
        self._erasure_wait_s = erasure_wait_s
        self._model = model
        self._current_term = current_term
        self._publisher = publisher
        self._max_batch_size = max_batch_size
        self._now = now or utc_now
        self._history = history
        self._metrics = metrics
        # Calls between their model work and their answer: what a graceful stop waits for;
        # and those cancelled there (a deadline, a client gone, a stop that ran out of grace).
        self.in_flight = 0
        self.cut_off = 0
        # Single-student calls share model calls and publishes when micro-batching is on.
        self._batcher: MicroBatcher[_Item, Prediction] | None = None
        if microbatch_wait_s > 0:
            self._batcher = MicroBatcher(
                self._predict_micro_batch, max_wait_s=microbatch_wait_s, max_items=microbatch_max
            )

    @property
    def model(self) -> Model:
        return self._model

    def use_model(self, model: Model) -> None:
        """Serve `model` from the next call on; calls in flight keep the one they started with."""
        self._model = model

    async def predict(
        self, student: Student | None, *, top_factors: int = 0, term: str = ""
    ) -> Prediction:
        """One student, for `term` ("" for the current term); raises InvalidInput or
        PublishUnavailable."""
        violations: list[FieldViolation] = []  # the term's and the student's, all at once
        try:
            term = self._term(term)
        except InvalidInput as refused:
            violations += refused.violations
        try:
            encoded = encode_student(student, "student")
        except InvalidInput as refused:
            violations += refused.violations
        if violations:
            raise InvalidInput(violations)
        assert student is not None  # encode_student refuses None
        item = _Item(student, encoded, tracing.trace_id.get(), term)
        if self._batcher is not None and not top_factors:
            # `_counted` spelled out: its generator-based context manager costs more than the
            # rest of this method, on the path every single-student call takes.
            self.in_flight += 1
            try:
                return await self._batcher.submit(item)
            except asyncio.CancelledError:
                self.cut_off += 1
                raise
            finally:
                self.in_flight -= 1
        [prediction] = await self._predict_and_publish([item], top_factors)
        return prediction

    async def predict_batch(
        self, students: Sequence[Student], *, top_factors: int = 0, term: str = ""
    ) -> list[Prediction | InvalidInput]:
        """One answer per student, in order: a prediction, or why that student was refused.
        Every student is predicted for `term` ("" for the current term); a bad term refuses the
        call (InvalidInput)."""
        term = self._term(term)
        if len(students) > self._max_batch_size:
            raise InvalidInput(
                [
                    FieldViolation(
                        "students",
                        f"at most {self._max_batch_size} students per call, got {len(students)}",
                    )
                ]
            )
        if top_factors and len(students) > MAX_EXPLAINED_BATCH:
            raise InvalidInput(
                [
                    FieldViolation(
                        "top_factors",
                        f"explanations are given for at most {MAX_EXPLAINED_BATCH} students per "
                        f"call, got {len(students)}: split the batch or set top_factors to 0",
                    )
                ]
            )
        answers: list[Prediction | InvalidInput | None] = []  # None: the model's to answer
        valid: list[_Item] = []
        trace_id = tracing.trace_id.get()  # one for the whole batch
        for index, student in enumerate(students):
            try:
                encoded = encode_student(student, f"students[{index}]")
            except InvalidInput as refused:
                answers.append(refused)
            else:
                valid.append(_Item(student, encoded, trace_id, term))
                answers.append(None)
        predictions = iter(await self._predict_and_publish(valid, top_factors) if valid else [])
        return [next(predictions) if answer is None else answer for answer in answers]

    def _term(self, given: str) -> str:
        """The term a request's predictions are for: the one it names, else the current one."""
        if not given:
            return self._current_term
        if not term_is_valid(given):
            raise InvalidInput(
                [FieldViolation("term", f"{TERM_FORMAT}; or empty for the server's current term")]
            )
        return given

    async def list_student_predictions(
        self, request: ListStudentPredictionsRequest
    ) -> ListStudentPredictionsResponse:
        """One page of the student's recorded predictions, newest first; raises InvalidInput,
        StudentNotFound or HistoryUnavailable."""
        page = history.page_query(request)
        if self._history is None:
            raise HistoryUnavailable("this server has no database to read histories from")
        # One row more than the page tells whether another page follows.
        limit = page.query.limit
        rows = await self._history.page(replace(page.query, limit=limit + 1))
        if rows is None:
            raise StudentNotFound(f"no student {request.student_id!r} is known")
        response = ListStudentPredictionsResponse(
            predictions=[history.student_prediction(r, request.student_id) for r in rows[:limit]]
        )
        if len(rows) > limit:
            last = history.next_cursor(rows[limit - 1])
            response.next_page_token = history.page_token(request.student_id, page.bounds, last)
        return response

    async def record_outcomes(
        self, outcomes: Sequence[Outcome]
    ) -> list[AcceptedOutcome | InvalidInput]:
        """One answer per outcome, in order. The valid ones are published as OutcomeEvents, in
        one publish with the same promise as a prediction's (acknowledged or spooled); raises
        PublishUnavailable when they could not be, and then none was accepted."""
        if len(outcomes) > self._max_batch_size:
            raise InvalidInput(
                [
                    FieldViolation(
                        "outcomes",
                        f"at most {self._max_batch_size} outcomes per call, got {len(outcomes)}",
                    )
                ]
            )
        answers = encode_outcomes(outcomes)
        rows = [a for a in answers if isinstance(a, OutcomeRow)]
        if not rows:
            return list(answers)  # type: ignore[arg-type]  # every one is an InvalidInput
        occurred_at = self._now()
        trace_id = tracing.trace_id.get()
        ids = iter(new_uuid4s(len(rows)))
        accepted: list[AcceptedOutcome | InvalidInput] = []
        records: list[KafkaRecord] = []
        for answer in answers:
            if isinstance(answer, InvalidInput):
                accepted.append(answer)
                continue
            event = OutcomeEvent(
                schema_version=envelope.SCHEMA_VERSION,
                event_id=next(ids),
                occurred_at=occurred_at,
                outcome=Outcome(
                    student_id=answer.student_id, term=answer.term, final_score=answer.final_score
                ),
            )
            records.append(envelope.encode_outcome(event, trace_id=trace_id))
            accepted.append(AcceptedOutcome(event.event_id))
        with self._counted():
            await self._publisher.publish(records)
        return accepted

    async def erase_student(
        self, student_id: str, *, reason: str = "", requested_by: str = ANONYMOUS
    ) -> ErasureAnswer:
        """Drops the student's events still waiting in the spool, then publishes an
        ErasureEvent with the same promise as a prediction's (acknowledged or spooled), then
        waits a bounded time for the recorder's audit row. Raises InvalidInput, or
        PublishUnavailable when the event could not be handed off (a full spool): then the
        student's spooled events are gone already, as asked, but the recorded rows stay until
        a retry succeeds (retrying is safe: a second erasure removes nothing more)."""
        violations = []
        if not student_id_is_valid(student_id):
            violations.append(FieldViolation("student_id", STUDENT_ID_RULE))
        if not reason_is_valid(reason):
            violations.append(FieldViolation("reason", REASON_RULE))
        if violations:
            raise InvalidInput(violations)
        with self._counted():
            if self._held_events is not None:
                await self._held_events.forget(student_id.encode())
            # Stamped after the spool is cleared: what the student did before this is refused.
            [event_id] = new_uuid4s(1)
            event = ErasureEvent(
                schema_version=envelope.SCHEMA_VERSION,
                event_id=event_id,
                occurred_at=self._now(),
                student_id=student_id,
                requested_by=requested_by,
                reason=reason,
            )
            record = envelope.encode_erasure(event, trace_id=tracing.trace_id.get())
            await self._publisher.publish([record])
        return ErasureAnswer(event_id, await self._confirmation(event_id))

    async def _confirmation(self, event_id: str) -> Mapping[str, int] | None:
        """The erasure's counts once the recorder has applied it, or None after the wait (or
        at once, while the database cannot be read): then it is accepted, not confirmed."""
        if self._erasure_audit is None or self._erasure_wait_s <= 0:
            return None
        try:
            async with asyncio.timeout(self._erasure_wait_s):
                for pause in Backoff(first_s=0.02, max_s=0.25).pauses():
                    found = await self._erasure_audit.erasure(event_id)
                    if found is not None:
                        return found
                    await asyncio.sleep(pause)
        except (TimeoutError, HistoryUnavailable):
            pass
        return None

    async def _predict_and_publish(
        self, items: Sequence[_Item], top_factors: int = 0
    ) -> list[Prediction]:
        with self._counted():
            return await self._predict_and_publish_uncounted(items, top_factors)

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        except asyncio.CancelledError:
            self.cut_off += 1
            raise
        finally:
            self.in_flight -= 1

    async def _predict_micro_batch(self, items: Sequence[_Item]) -> list[Prediction]:
        # One publish for the batch: all its callers' events are safe, or none of them is.
        return await self._predict_and_publish_uncounted(items, 0)

    async def _predict_and_publish_uncounted(
        self, items: Sequence[_Item], top_factors: int
    ) -> list[Prediction]:
        model = self._model
        rows = [item.encoded.features for item in items]

        def work() -> tuple[Sequence[float], Sequence[float], Sequence[ScoreContributions]]:
            scores, probabilities = model.predict(rows)
            return scores, probabilities, model.explain(rows) if top_factors else []

        # A model that says it is cheap for this many rows runs on the event loop: a thread
        # hand-off costs more than a dot product, and the GIL serializes the work anyway.
        # Anything else (explanations, trees, the DataFrame fallback) goes to a worker thread
        # so that a large batch does not stall other calls.
        inline_rows: int = getattr(model, "inline_rows", 0)
        if top_factors or len(rows) > inline_rows:
            scores, probabilities, explained = await asyncio.to_thread(work)
        else:
            scores, probabilities, explained = work()
        occurred_at = self._now()
        version, pass_mark = model.version, model.pass_mark
        interval = model.score_interval
        lows: list[float] = []
        highs: list[float] = []
        if interval is not None:
            lows, highs = interval.bounds_of(scores)
        predictions: list[Prediction] = []
        records: list[KafkaRecord] = []
        passes = 0
        for index, (item, score, probability, prediction_id) in enumerate(
            zip(items, scores, probabilities, new_uuid4s(len(items)), strict=True)
        ):
            passed = probability >= 0.5
            prediction = Prediction(
                prediction_id=prediction_id,
                predicted_final_score=score,
                pass_probability=probability,
                predicted_pass=passed,
                model_version=version,
                imputed_fields=item.encoded.imputed_fields,
                pass_mark=pass_mark,
                term=item.term,
            )
            if interval is not None:
                prediction.score_interval_low = lows[index]
                prediction.score_interval_high = highs[index]
                prediction.interval_coverage = interval.coverage
            if top_factors:
                prediction.explanation.CopyFrom(
                    explanation(explained[index], top_factors, item.encoded.imputed_fields)
                )
            event = PredictionEvent(
                schema_version=envelope.SCHEMA_VERSION,
                event_id=prediction_id,
                occurred_at=occurred_at,
                input=item.student,
                prediction=prediction,
            )
            passes += passed
            predictions.append(prediction)
            records.append(envelope.encode(event, trace_id=item.trace_id))
        if self._metrics is not None:
            self._metrics.predicted(version, len(predictions), passes)
        await self._publisher.publish(records)
        return predictions

    async def drain(self) -> None:
        """Finishes the micro-batches already collected (for a graceful stop)."""
        if self._batcher is not None:
            await self._batcher.drain()
