"""Per-prediction explanations: exact for both model kinds, grouped by input, cheap to skip."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations
from math import factorial

import numpy as np
import pandas as pd
import pytest

from inference_service.core import (
    PredictionCore,
    ScoreContributions,
    explanation,
)
from inference_service.encoding import InvalidInput
from inference_service.model import ServedModel, feature_table
from studentperf import envelope, explain
from studentperf.envelope import KafkaRecord
from studentperf.features import FEATURE_COLUMNS, FEATURE_PATHS, FeatureValue
from studentperf.limits import MAX_EXPLAINED_BATCH
from studentperf.model_artifact import LoadedModel, StudentModel
from studentperf.v1.prediction_service_pb2 import ModelInfo, Prediction
from studentperf.v1.student_pb2 import AcademicRecord, Student, StudentProfile
from trainer import synthetic
from trainer.fit import TrainingResult, fit_and_evaluate
from trainer.pipeline import boosted_classifier, boosted_regressor, logistic, ridge


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic.generate(1500, seed=11)


@pytest.fixture(scope="module")
def linear(frame: pd.DataFrame) -> TrainingResult:
    return fit_and_evaluate(
        frame, pass_mark=50.0, seed=11, score_options=[ridge(1.0)], pass_options=[logistic(1.0)]
    )


@pytest.fixture(scope="module")
def boosted(frame: pd.DataFrame) -> TrainingResult:
    return fit_and_evaluate(
        frame,
        pass_mark=50.0,
        seed=11,
        score_options=[boosted_regressor(11, max_iter=40)],
        pass_options=[boosted_classifier(11, max_iter=40)],
    )


def served(model: StudentModel) -> ServedModel:
    return ServedModel(LoadedModel(model=model, version="v-test", path=None, metadata={}))  # type: ignore[arg-type]


def rows(frame: pd.DataFrame, n: int) -> list[tuple[FeatureValue, ...]]:
    """As the encoder makes them: NaN for a missing number, None for a missing category."""
    return [tuple(row) for row in frame[list(FEATURE_COLUMNS)].head(n).itertuples(index=False)]


@pytest.mark.parametrize("kind", ["linear", "boosted"])
def test_base_plus_contributions_is_the_raw_score(
    kind: str, request: pytest.FixtureRequest, frame: pd.DataFrame
) -> None:
    model: StudentModel = request.getfixturevalue(kind).model
    table = frame[list(FEATURE_COLUMNS)].head(200)
    found = model.explain_scores(table)
    assert found.method == (explain.LINEAR if kind == "linear" else explain.SHAPLEY)
    assert found.contributions.shape == (200, len(FEATURE_COLUMNS))
    np.testing.assert_allclose(found.base + found.contributions.sum(axis=1), found.raw, atol=1e-9)
    # The raw score is the regressor's own prediction, and the served score is it clipped.
    np.testing.assert_allclose(found.raw, model.regressor.predict(table), atol=1e-9)
    np.testing.assert_allclose(np.clip(found.raw, 0, 100), model.predict_scores(table), atol=1e-9)


def test_linear_closed_form_equals_the_enumerated_shapley_values(linear: TrainingResult) -> None:
    model = linear.model
    table = synthetic.generate(50, seed=3)[list(FEATURE_COLUMNS)]
    encoded = model.regressor.named_steps["features"].transform(table)
    closed = model.explain_scores(table)
    enumerated = explain.shapley(
        model.regressor.named_steps["model"].predict,
        encoded,
        model.score_reference,
        model.feature_groups,
    )
    np.testing.assert_allclose(closed.contributions, enumerated.contributions, atol=1e-9)
    assert closed.base == pytest.approx(enumerated.base)


def test_linear_base_is_the_mean_training_prediction(
    linear: TrainingResult, frame: pd.DataFrame
) -> None:
    fit = pd.concat([linear.split.train, linear.split.validation])
    mean = linear.model.regressor.predict(fit[list(FEATURE_COLUMNS)]).mean()
    assert linear.model.explain_scores(fit.head(1)).base == pytest.approx(mean)


def test_shapley_weights_match_the_definition_by_orders() -> None:
    # phi_i = average over all orders of adding players of i's marginal contribution.
    n = 4
    rng = np.random.default_rng(0)
    values = rng.normal(size=2**n)  # an arbitrary game over the coalitions in coalitions(n)
    index = {tuple(bool(b) for b in subset): k for k, subset in enumerate(explain.coalitions(n))}

    def value(members: set[int]) -> float:
        return float(values[index[tuple(i in members for i in range(n))]])

    expected = np.zeros(n)
    for order in permutations(range(n)):
        members: set[int] = set()
        for player in order:
            expected[player] += value(members | {player}) - value(members)
            members.add(player)
    expected /= factorial(n)
    np.testing.assert_allclose(values @ explain.shapley_weights(n), expected, atol=1e-12)


def test_an_interaction_is_split_evenly_between_its_inputs() -> None:
    # f = x0 * x1 with reference 0: neither input alone moves f, together they make it 6.
    groups = ((0,), (1,), (2,))
    found = explain.shapley(
        lambda z: z[:, 0] * z[:, 1], np.array([[2.0, 3.0, 9.0]]), np.zeros(3), groups
    )
    np.testing.assert_allclose(found.contributions, [[3.0, 3.0, 0.0]], atol=1e-12)
    assert (found.base, found.raw[0]) == (0.0, 6.0)


def test_one_hot_columns_are_grouped_into_their_input(linear: TrainingResult) -> None:
    names = list(linear.model.regressor.named_steps["features"].get_feature_names_out())
    groups = dict(zip(FEATURE_COLUMNS, linear.model.feature_groups, strict=True))
    assert [names[i] for i in groups["previous_gpa"]] == ["numeric__previous_gpa"]
    assert [names[i] for i in groups["lunch_program"]] == [
        "categorical__lunch_program_standard",
        "categorical__lunch_program_free_or_reduced",
    ]
    assert len(groups["parental_education"]) == 7  # some_high_school ... doctorate
    with pytest.raises(ValueError, match="do not map"):
        explain.feature_groups([*names, "numeric__shoe_size"], FEATURE_COLUMNS)


def test_a_clipped_score_is_explained_before_clipping(linear: TrainingResult) -> None:
    brilliant: tuple[FeatureValue, ...] = (
        16.0, 100.0, 100.0, 4.0, 1.0, "female", "doctorate", "standard", "completed"
    )  # fmt: skip
    model = served(linear.model)
    [score], _ = model.predict([brilliant])
    [found] = model.explain([brilliant])
    assert found.raw > 100 and score == 100.0
    assert found.base + sum(found.contributions) == pytest.approx(found.raw)


def test_planted_effects_point_the_right_way(linear: TrainingResult) -> None:
    # A student better than average on GPA and attendance, worse on study hours.
    student: tuple[FeatureValue, ...] = (
        16.0, 95.0, 2.0, 3.8, None, None, None, "free_or_reduced", None
    )  # fmt: skip
    [found] = served(linear.model).explain([student])
    by = dict(zip(FEATURE_COLUMNS, found.contributions, strict=True))
    assert by["previous_gpa"] > 5 and by["attendance_percentage"] > 4
    assert by["study_hours_per_week"] < -4 and by["lunch_program"] < -1
    assert abs(by["gender"]) < 0.5 and abs(by["age"]) < 0.5


def test_the_answer_lists_the_largest_factors_and_sums_the_rest() -> None:
    contributions = (0.5, -6.0, 2.0, 9.0, 0.0, 0.1, -0.2, 1.0, -3.0)
    found = ScoreContributions(
        base=50.0, raw=50.0 + sum(contributions), contributions=contributions
    )
    answer = explanation(found, 3, ["academic_record.attendance_percentage"])
    assert [f.feature for f in answer.top_factors] == [
        FEATURE_PATHS["previous_gpa"],
        FEATURE_PATHS["attendance_percentage"],
        FEATURE_PATHS["test_preparation"],
    ]
    assert [f.contribution for f in answer.top_factors] == [9.0, -6.0, -3.0]
    assert [f.imputed for f in answer.top_factors] == [False, True, False]
    listed = sum(f.contribution for f in answer.top_factors)
    assert answer.base_score + listed + answer.other_factors == pytest.approx(answer.raw_score)
    everything = explanation(found, 50, [])
    assert len(everything.top_factors) == len(FEATURE_COLUMNS) and everything.other_factors == 0


def test_served_explanations_match_the_artifact(
    boosted: TrainingResult, frame: pd.DataFrame
) -> None:
    model = served(boosted.model)
    model.warm_up()
    sample = rows(frame, 30)
    explained = model.explain(sample)
    scores, _ = model.predict(sample)
    direct = boosted.model.explain_scores(feature_table(sample))
    for index, found in enumerate(explained):
        assert found.contributions == pytest.approx(direct.contributions[index].tolist())
        assert min(max(found.raw, 0.0), 100.0) == pytest.approx(scores[index])


# --- the core: explanations only when asked -------------------------------------------------


class CountingModel:
    """Wraps a served model and counts the explain calls."""

    def __init__(self, inner: ServedModel) -> None:
        self.inner = inner
        self.explained = 0
        self.version = inner.version
        self.pass_mark = inner.pass_mark
        self.score_interval = inner.score_interval

    def predict(
        self, rows: Sequence[tuple[FeatureValue, ...]]
    ) -> tuple[Sequence[float], Sequence[float]]:
        return self.inner.predict(rows)

    def explain(self, rows: Sequence[tuple[FeatureValue, ...]]) -> Sequence[ScoreContributions]:
        self.explained += 1
        return self.inner.explain(rows)

    def info(self) -> ModelInfo:
        return self.inner.info()


class NullPublisher:
    async def publish(self, records: Sequence[KafkaRecord]) -> None:
        self.records = list(records)


def student(sid: str) -> Student:
    """A poor GPA with good attendance; study hours not given."""
    return Student(
        profile=StudentProfile(student_id=sid, age=16),
        academic_record=AcademicRecord(previous_gpa=1.0, attendance_percentage=98),
    )


async def test_core_explains_only_when_asked(linear: TrainingResult) -> None:
    model = CountingModel(served(linear.model))
    publisher = NullPublisher()
    core = PredictionCore(model, publisher, max_batch_size=2000)

    plain = await core.predict(student("a"))
    assert not plain.HasField("explanation") and model.explained == 0

    asked = await core.predict(student("a"), top_factors=2)
    assert model.explained == 1
    found = asked.explanation
    assert [f.feature for f in found.top_factors] == [
        "academic_record.previous_gpa",
        "academic_record.attendance_percentage",
    ]
    assert found.top_factors[0].contribution < -10 < 0 < found.top_factors[1].contribution
    assert not any(f.imputed for f in found.top_factors)
    total = found.base_score + sum(f.contribution for f in found.top_factors) + found.other_factors
    assert total == pytest.approx(found.raw_score)
    assert asked.predicted_final_score == pytest.approx(found.raw_score)
    # The event carries the prediction as answered, explanation included.
    assert envelope.decode(publisher.records[0].value).prediction == asked

    every = (await core.predict(student("a"), top_factors=99)).explanation
    imputed = {f.feature for f in every.top_factors if f.imputed}
    assert len(every.top_factors) == len(FEATURE_COLUMNS) and every.other_factors == 0
    assert imputed == set(FEATURE_PATHS.values()) - {
        "profile.age",
        "academic_record.previous_gpa",
        "academic_record.attendance_percentage",
    }


async def test_batch_explanations_are_capped(linear: TrainingResult) -> None:
    core = PredictionCore(served(linear.model), NullPublisher(), max_batch_size=5000)
    many = [student(f"s{i}") for i in range(MAX_EXPLAINED_BATCH + 1)]
    with pytest.raises(InvalidInput) as refused:
        await core.predict_batch(many, top_factors=1)
    assert refused.value.violations[0].field == "top_factors"
    answers = await core.predict_batch(many[:3], top_factors=1)
    assert all(isinstance(a, Prediction) and len(a.explanation.top_factors) == 1 for a in answers)
    assert len(await core.predict_batch(many, top_factors=0)) == len(many)
