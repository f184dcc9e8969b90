"""The serving benchmark's arithmetic and reporting: ratios, targets, backlog, the plot."""

from __future__ import annotations

import math
from pathlib import Path

from infra.bench.end_to_end import EndToEnd, backlog, percentile
from infra.bench.load_driver import BATCH_PREDICT, PREDICT, Case, Result
from infra.bench.mlserver_peer import BATCHED, MODEL_INFER, UNBATCHED, requirements, same_score
from infra.bench.peers import full_student_row, spooled_in
from infra.bench.plot import Point, plot
from infra.bench.serving_report import table
from infra.bench.serving_targets import targets
from infra.bench.summary import Measured
from studentperf.features import FEATURE_COLUMNS
from studentperf.model_artifact import library_versions


def result(server: str, concurrency: int, calls_per_s: float, p99_ms: float = 10.0) -> Result:
    call = MODEL_INFER if server in (UNBATCHED, BATCHED) else PREDICT
    return Result(Case(server, call, concurrency), calls_per_s, 1.0, 5.0, p99_ms, 100, 0)


def e2e(**changes: object) -> EndToEnd:
    fields: dict[str, object] = {
        "rate": 1000.0,
        "ok": 30_000,
        "failed": {},
        "first_errors": {},
        "stored": 30_000,
        "lag_p50_ms": 300.0,
        "lag_p99_ms": 700.0,
        "lag_max_ms": 900.0,
        "recorded_p50_ms": 150.0,
        "recorded_p99_ms": 500.0,
        "backlog_middle": 400,
        "backlog_end": 420,
        "drain_s": 0.5,
        "generator_slip_p99_ms": 2.0,
        "recorder_peak_mb": 40.0,
        "service_peak_mb": 200.0,
    }
    return EndToEnd(**(fields | changes))  # type: ignore[arg-type]


RESULTS = [
    result("trivial", 16, 4000.0),
    result("service", 16, 2000.0),
    result(UNBATCHED, 16, 150.0),
    result(BATCHED, 16, 500.0),
    result("trivial", 64, 5000.0),
    result("service", 64, 3000.0, p99_ms=60.0),
    result(UNBATCHED, 64, 140.0),
    result(BATCHED, 64, 400.0),
    Result(Case("service", BATCH_PREDICT, 4, 1000), 40.0, 90.0, 110.0, 120.0, 200, 0),
]


def test_each_single_student_row_has_its_ratio_to_trivial_and_the_service_to_mlserver() -> None:
    body = table(RESULTS)[2:]  # after the header and its rule
    rows = {line.split(" | ")[0].strip("| ") + line.split(" | ")[1]: line for line in body}
    service_64 = rows["service Predict64"]
    assert "| 0.60x |" in service_64  # 3000 / 5000
    assert "**7.5x**" in service_64  # 3000 / 400, the better MLServer configuration at 64
    assert "| 0.03x | - |" in rows["MLServer ModelInfer, batching off64"]  # 140 / 5000
    assert "| - | - |" in rows["service BatchPredict x10004"]


def test_targets_compare_with_mlservers_best_at_any_concurrency() -> None:
    found = {t.what: t for t in targets(Measured(RESULTS, 10, 10, 190.0, "", e2e()))}
    mlserver = next(t for what, t in found.items() if "MLServer" in what)
    assert mlserver.figure.startswith("6.0x")  # 3000 / 500 (batched, at 16), not 3000 / 400
    assert mlserver.met is True
    trivial = next(t for what, t in found.items() if "trivial" in what)
    assert trivial.met is True  # 0.60x meets ">= 0.6x"
    p99 = next(t for what, t in found.items() if what == "Predict c=64: p99")
    assert p99.met is False  # 60 ms
    batch = next(t for what, t in found.items() if "BatchPredict" in what)
    assert batch.met is True and batch.figure.startswith("40,000")


def test_a_missing_mlserver_is_reported_with_the_reason_not_a_figure() -> None:
    measured = Measured(RESULTS[:2], 10, 10, 190.0, "pip install failed: no wheel", e2e())
    [mlserver] = [t for t in targets(measured) if "MLServer" in t.what]
    assert mlserver.met is None
    assert "no wheel" in mlserver.figure


def test_end_to_end_targets() -> None:
    def verdicts(run: EndToEnd) -> dict[str, bool | None]:
        found = targets(Measured(RESULTS, 10, 10, 190.0, "", run))
        return {t.what.split(":")[0]: t.met for t in found if "end to end" in t.what} | {
            "recorder RSS": next(t.met for t in found if "recorder peak RSS" in t.what)
        }

    assert set(verdicts(e2e()).values()) == {True}
    slow = verdicts(e2e(lag_p99_ms=1500.0, backlog_end=5000, recorder_peak_mb=250.0))
    assert set(slow.values()) == {False}
    assert verdicts(e2e(stored=29_999))["end to end"] is False  # a lost row is not keeping up


def test_backlog_counts_predictions_made_but_not_yet_visible() -> None:
    seen = {  # id -> (first seen, predicted at, recorded at)
        "a": (1.5, 1.0, 1.2),
        "b": (2.5, 1.9, 2.2),
        "c": (2.6, 2.1, 2.3),
    }
    assert backlog(seen, 0.5) == 0
    assert backlog(seen, 2.0) == 1  # b made, not yet seen; a already seen
    assert backlog(seen, 2.2) == 2
    assert backlog(seen, 3.0) == 0


def test_percentile_takes_the_nearest_rank_below() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert math.isnan(percentile([], 0.5))


def test_mlserver_answers_are_compared_after_the_services_clipping() -> None:
    assert same_score(100.0, 103.2)
    assert same_score(42.123456789, 42.1234567891)
    assert not same_score(42.0, 42.5)


def test_mlserver_gets_the_projects_own_library_versions() -> None:
    wanted = requirements()
    ours = library_versions()
    for name in ("scikit-learn", "pandas", "numpy", "joblib"):
        assert f"{name}=={ours[name]}" in wanted
    assert "mlserver==1.7.1" in wanted and "mlserver-sklearn==1.7.1" in wanted


def test_the_benchmark_student_is_a_full_feature_row() -> None:
    row = full_student_row(7)
    assert list(row) == list(FEATURE_COLUMNS)
    assert all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in row.values())


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "bench.png"
    series = {
        "service": [Point(1, 200.0, 4.0, 9.0), Point(64, 3000.0, 18.0, 39.0)],
        "trivial": [Point(1, 1800.0, 0.4, 1.1), Point(64, 6000.0, 9.8, 20.0)],
    }
    plot(series, "test", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_that_spooled_events_says_so() -> None:
    def spool_row(spooled: int) -> tuple[str, bool | None]:
        measured = Measured(RESULTS, 10, 10, 190.0, "", e2e(), spooled=spooled)
        [row] = [t for t in targets(measured) if "through the spool" in t.what]
        return row.figure, row.met

    assert spool_row(0) == ("0 events spooled", True)
    assert spool_row(1_234) == ("1,234 events spooled", False)


def test_spooled_events_are_summed_over_workers() -> None:
    one = "# TYPE studentperf_inference_spooled_events_total counter\n"
    one += "studentperf_inference_spooled_events_total 7.0\n"
    one += "studentperf_inference_spooled_events_created 1.7e9\n"
    assert spooled_in(one) == 7
    two = (
        'studentperf_inference_spooled_events_total{worker="0"} 3.0\n'
        'studentperf_inference_spooled_events_total{worker="1"} 5.0\n'
        'studentperf_inference_spooled_events_created{worker="1"} 1.7e9\n'
    )
    assert spooled_in(two) == 8
