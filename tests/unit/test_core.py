"""The prediction core with a fake model and publisher: no network."""

import uuid
from collections.abc import Sequence

import pytest

from inference_service.core import PredictionCore, PublishUnavailable, ScoreContributions
from inference_service.encoding import InvalidInput
from studentperf import envelope
from studentperf.envelope import KafkaRecord
from studentperf.features import FEATURE_COLUMNS, FeatureValue
from studentperf.score_interval import ScoreInterval
from studentperf.v1.prediction_service_pb2 import ModelInfo, Prediction
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile

AGE = FEATURE_COLUMNS.index("age")


class AgeModel:
    """Score = age, probability = age / 100: easy to tell which row gave which answer."""

    version = "test-v1"
    pass_mark = 50.0
    score_interval: ScoreInterval | None = None

    def predict(
        self, rows: Sequence[tuple[FeatureValue, ...]]
    ) -> tuple[Sequence[float], Sequence[float]]:
        ages = [float(row[AGE]) for row in rows]  # type: ignore[arg-type]
        return ages, [a / 100 for a in ages]

    def explain(self, rows: Sequence[tuple[FeatureValue, ...]]) -> list[ScoreContributions]:
        """All of the score is age's doing."""
        ages, _ = self.predict(rows)
        others = [0.0] * (len(FEATURE_COLUMNS) - 1)
        return [ScoreContributions(0.0, a, (*others[:AGE], a, *others[AGE:])) for a in ages]

    def info(self) -> ModelInfo:
        return ModelInfo(model_version=self.version)


class RecordingPublisher:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[KafkaRecord] = []
        self.fail = fail

    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        if self.fail:
            raise PublishUnavailable("broker away")
        self.records.extend(records)


def student(sid: str, age: int) -> Student:
    return Student(
        profile=StudentProfile(student_id=sid, age=age),
        academic_record=AcademicRecord(previous_gpa=3.0),
    )


def core(publisher: RecordingPublisher, max_batch_size: int = 10) -> PredictionCore:
    return PredictionCore(AgeModel(), publisher, max_batch_size=max_batch_size)


async def test_predict_answers_and_publishes_one_matching_event() -> None:
    publisher = RecordingPublisher()
    prediction = await core(publisher).predict(student("a", 60))
    assert uuid.UUID(prediction.prediction_id).version == 4
    assert prediction.predicted_final_score == 60.0
    assert prediction.pass_probability == 0.6 and prediction.predicted_pass
    assert prediction.model_version == "test-v1" and prediction.pass_mark == 50.0
    assert "academic_record.attendance_percentage" in prediction.imputed_fields
    [record] = publisher.records
    event = envelope.decode(record.value)
    assert record.key == b"a"
    assert event.event_id == prediction.prediction_id
    assert event.prediction == prediction
    assert event.input == student("a", 60)  # as received: nothing imputed into it
    assert event.occurred_at.seconds > 0


class IntervalAgeModel(AgeModel):
    score_interval = ScoreInterval(half_width=12.5, coverage=0.8)


async def test_each_prediction_and_its_event_carry_the_models_interval() -> None:
    publisher = RecordingPublisher()
    served = PredictionCore(IntervalAgeModel(), publisher, max_batch_size=10)
    answers = await served.predict_batch([student("a", 60), student("b", 95)])
    predictions = [a for a in answers if isinstance(a, Prediction)]
    found = [(p.score_interval_low, p.score_interval_high) for p in predictions]
    assert found == [(47.5, 72.5), (82.5, 100.0)]  # clipped to the score range
    assert [p.interval_coverage for p in predictions] == [0.8, 0.8]
    events = [envelope.decode(r.value) for r in publisher.records]
    assert [e.prediction for e in events] == predictions


async def test_a_model_without_an_interval_leaves_the_fields_unset() -> None:
    publisher = RecordingPublisher()
    prediction = await core(publisher).predict(student("a", 60))
    for name in ("score_interval_low", "score_interval_high", "interval_coverage"):
        assert not prediction.HasField(name)
        assert not envelope.decode(publisher.records[0].value).prediction.HasField(name)


async def test_rejected_input_publishes_nothing() -> None:
    publisher = RecordingPublisher()
    with pytest.raises(InvalidInput):
        await core(publisher).predict(student("a", 5))
    assert publisher.records == []


async def test_batch_answers_in_order_and_refuses_items_alone() -> None:
    publisher = RecordingPublisher()
    answers = await core(publisher).predict_batch(
        [student("a", 20), student("bad id", 30), student("c", 40), student("d", 200)]
    )
    assert [type(a).__name__ for a in answers] == [
        "Prediction",
        "InvalidInput",
        "Prediction",
        "InvalidInput",
    ]
    assert answers[0].predicted_final_score == 20.0  # type: ignore[union-attr]
    assert answers[2].predicted_final_score == 40.0  # type: ignore[union-attr]
    assert answers[1].violations[0].field == "students[1].profile.student_id"  # type: ignore[union-attr]
    assert answers[3].violations[0].field == "students[3].profile.age"  # type: ignore[union-attr]
    assert [r.key for r in publisher.records] == [b"a", b"c"]


async def test_batch_over_the_limit_is_refused_whole() -> None:
    publisher = RecordingPublisher()
    with pytest.raises(InvalidInput, match="at most 2 students per call, got 3"):
        await core(publisher, max_batch_size=2).predict_batch([student("a", 20)] * 3)
    assert publisher.records == []


async def test_empty_batch_answers_nothing() -> None:
    assert await core(RecordingPublisher()).predict_batch([]) == []


async def test_publish_failure_fails_the_call() -> None:
    with pytest.raises(PublishUnavailable):
        await core(RecordingPublisher(fail=True)).predict(student("a", 60))


def core_with_term(publisher: RecordingPublisher, current_term: str) -> PredictionCore:
    return PredictionCore(AgeModel(), publisher, max_batch_size=10, current_term=current_term)


async def test_a_prediction_names_the_requested_term_else_the_current_one() -> None:
    publisher = RecordingPublisher()
    service = core_with_term(publisher, "2026-spring")
    named = await service.predict(student("a", 60), term="2025-term-2")
    defaulted = await service.predict(student("b", 60))
    batch = await service.predict_batch([student("c", 20), student("d", 30)], term="2026-fall")
    default_batch = await service.predict_batch([student("e", 20)])
    assert named.term == "2025-term-2" and defaulted.term == "2026-spring"
    assert [a.term for a in batch] == ["2026-fall", "2026-fall"]  # type: ignore[union-attr]
    assert [a.term for a in default_batch] == ["2026-spring"]  # type: ignore[union-attr]
    events = [envelope.decode(r.value) for r in publisher.records]
    assert [e.prediction.term for e in events] == [
        "2025-term-2",
        "2026-spring",
        "2026-fall",
        "2026-fall",
        "2026-spring",
    ]


async def test_without_a_current_term_a_prediction_names_none() -> None:
    publisher = RecordingPublisher()
    prediction = await core(publisher).predict(student("a", 60))
    assert prediction.term == ""
    assert envelope.decode(publisher.records[0].value).prediction.term == ""


@pytest.mark.parametrize(
    "term", ["spring", "2026", "2026-Spring", "2026_spring", "2026-", "2026-" + "a" * 28, " "]
)
async def test_a_bad_term_refuses_the_call_naming_the_field_and_the_rule(term: str) -> None:
    publisher = RecordingPublisher()
    service = core_with_term(publisher, "2026-spring")
    for call in (
        service.predict(student("a", 60), term=term),
        service.predict_batch([student("a", 60), student("b", 60)], term=term),
    ):
        with pytest.raises(InvalidInput) as refused:
            await call
        [violation] = refused.value.violations
        assert violation.field == "term"
        assert "'YYYY-name' in lower-case letters and digits" in violation.description
    assert publisher.records == []


async def test_a_bad_term_and_a_bad_student_are_named_together() -> None:
    with pytest.raises(InvalidInput) as refused:
        await core(RecordingPublisher()).predict(student("a", 5), term="spring")
    assert [v.field for v in refused.value.violations] == ["term", "student.profile.age"]
