"""The served model over gRPC: explanations, model info, and hot reload under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from inference_service.model import load_served_model
from inference_service.server import start_server
from inference_service.settings import Settings as InferenceSettings
from studentperf.model_artifact import set_current
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb
from tests.integration.conftest import Stack
from tests.integration.helpers import train_version

STUDENT = pb.Student(
    profile=pb.StudentProfile(student_id="explain-1", age=16, gender=pb.GENDER_MALE),
    academic_record=pb.AcademicRecord(
        attendance_percentage=97, previous_gpa=1.2, study_hours_per_week=3
    ),
)


async def test_predictions_explain_themselves_exactly(
    stub: api_grpc.PredictionServiceAsyncStub,
) -> None:
    answer = await stub.Predict(api.PredictRequest(student=STUDENT, top_factors=3), timeout=10)
    found = answer.prediction.explanation
    assert [f.feature for f in found.top_factors][:1] == ["academic_record.previous_gpa"]
    assert found.top_factors[0].contribution < 0  # a GPA of 1.2 pulls the score down
    total = found.base_score + sum(f.contribution for f in found.top_factors) + found.other_factors
    assert total == pytest.approx(found.raw_score, abs=1e-9)
    assert answer.prediction.predicted_final_score == pytest.approx(
        min(max(found.raw_score, 0), 100)
    )
    plain = await stub.Predict(api.PredictRequest(student=STUDENT), timeout=10)
    assert not plain.prediction.HasField("explanation")

    too_many = api.BatchPredictRequest(students=[STUDENT] * 1001, top_factors=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchPredict(too_many, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_factors" in (caught.value.details() or "")


async def test_model_info_has_metrics_and_global_importances(
    stub: api_grpc.PredictionServiceAsyncStub,
) -> None:
    info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
    assert {"score_rmse", "pass_roc_auc", "pass_f1", "pass_brier", "pass_ece"} <= set(info.metrics)
    assert set(info.metrics) == set(info.baseline_metrics)
    ranked = [(i.feature, i.rmse_increase) for i in info.feature_importances]
    assert len(ranked) == 9 and ranked == sorted(ranked, key=lambda p: -p[1])
    assert ranked[0][0].startswith("academic_record.")
    assert info.score_estimator.startswith("ridge") and info.explanation_method == "linear-exact"
    assert info.validation_rows > 0 and len(info.data_sha256) == 64
    groups = info.group_quality
    assert groups.rows == info.test_rows
    assert [a.attribute for a in groups.attributes] == [
        "profile.gender",
        "profile.lunch_program",
        "profile.parental_education",
    ]
    lunch = {g.group: g for g in groups.attributes[1].groups}
    assert lunch["standard"].judged and lunch["free_or_reduced"].judged
    assert 0 < lunch["standard"].figures["score_rmse"] < 20
    rmse = next(g for g in groups.attributes[1].gaps if g.figure == "score_rmse")
    assert rmse.interval_low < rmse.interval_high and 0.9 <= rmse.level < 1
    # Each group's interval_coverage beside the level the served interval states.
    assert groups.HasField("stated_coverage")
    assert groups.stated_coverage == info.score_interval.coverage == 0.8
    assert 0 < lunch["standard"].figures["interval_coverage"] <= 1


# What the README promises of a promotion under load: no call fails and none takes longer than
# this. Measured on 2 shared cores: slowest 50-200 ms at load averages 5-14, 320 ms with three
# busy loops beside the test; the bound leaves room for a busier machine, and still catches a
# reload that holds the event loop for seconds (a model that is slow to load, loaded on it).
# Each call's deadline is far longer, so a slow call is counted against the bound rather than cut
# off by its deadline first.
PROMISED_SLOWEST_S = 2.0
CALL_DEADLINE_S = 60.0


CALLS_EACH_SIDE = 25  # answered before the promotion, and with the new version after it


async def _until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (polled: the callers append)
            await asyncio.sleep(0.05)


def _ms(ordered: list[float], q: float) -> str:
    """The `q` quantile of sorted durations, in milliseconds."""
    if not ordered:
        return "-"
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f} ms"


async def test_hot_reload_under_load_fails_no_call(tmp_path: Path, stack: Stack) -> None:
    models = tmp_path / "models"
    old, new = train_version(models, 1, 1), train_version(models, 2, 2)
    set_current(models, old)
    # What a reload that blocked the event loop would add to the calls waiting on it.
    loading = time.monotonic()
    load_served_model(str(models / new), expected_pass_mark=50.0).warm_up()
    load_s = time.monotonic() - loading
    settings = InferenceSettings(
        shared=stack.shared,
        listen_address="127.0.0.1:0",
        models_dir=str(models),
        model_poll_interval_s=0.1,
        spool_dir=str(tmp_path / "spool"),
    )
    running = await start_server(settings)
    seen: list[tuple[float, float, str]] = []  # (started, finished, version)
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def caller(stub: api_grpc.PredictionServiceAsyncStub, worker: int) -> None:
        n = 0
        while not stop.is_set():
            student = pb.Student(profile=pb.StudentProfile(student_id=f"reload-{worker}-{n}"))
            n += 1
            started = time.monotonic()
            try:
                answer = await stub.Predict(
                    api.PredictRequest(student=student), timeout=CALL_DEADLINE_S
                )
            except grpc.aio.AioRpcError as error:
                failures.append(error)
                continue
            seen.append((started, time.monotonic(), answer.prediction.model_version))

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = api_grpc.PredictionServiceStub(channel)
            callers = [asyncio.create_task(caller(stub, w)) for w in range(8)]
            # Counted, not timed, so a slow machine still sees calls on both sides of the switch.
            await _until(lambda: len(seen) >= CALLS_EACH_SIDE)
            promoted = time.monotonic()
            set_current(models, new)
            await _until(lambda: [v for *_, v in seen].count(new) >= CALLS_EACH_SIDE)
            stop.set()
            await asyncio.gather(*callers)
            info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
    finally:
        await running.stop(grace_s=5)

    versions = [version for _, _, version in seen]
    durations = sorted(finished - started for started, finished, _ in seen)
    slow = [d for d in durations if d > PROMISED_SLOWEST_S]
    switched = min((finished for _, finished, version in seen if version == new), default=0.0)
    around = [f - s for s, f, _ in seen if f >= promoted and s <= switched]
    print(
        f"{len(seen)} calls ({versions.count(old)} old, {versions.count(new)} new), "
        f"{len(failures)} failed; p50 {_ms(durations, 0.5)}, p90 {_ms(durations, 0.9)}, "
        f"p99 {_ms(durations, 0.99)}, slowest {_ms(durations, 1)}; {len(slow)} slower than "
        f"{PROMISED_SLOWEST_S:g} s; {len(around)} calls during the reload, slowest "
        f"{_ms(sorted(around), 1)}; loading the new version alone: {load_s * 1000:.0f} ms"
    )
    assert failures == []
    assert {old, new} == set(versions)
    assert slow == [], f"{len(slow)} calls slower than {PROMISED_SLOWEST_S:g} s: {slow[-5:]}"
    # Once a call has answered with the new version, no call started later gets the old one.
    assert all(version == new for started, _, version in seen if started > switched)
    assert info.model_version == new
