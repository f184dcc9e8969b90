"""The serving benchmark's repeats: medians and ranges, the interleaved order, ratios taken
within a round, and the verdicts of issue 17's targets."""

from __future__ import annotations

import math

import pytest

from infra.bench.load_driver import (
    PREDICT,
    SERVICE,
    SERVICE_2,
    SERVICE_ASYNCIO,
    TRIVIAL,
    TRIVIAL_ASYNCIO,
    Case,
    Result,
    cases,
)
from infra.bench.mlserver_peer import BATCHED, MODEL_INFER, UNBATCHED
from infra.bench.repeats import Spread, interleaved, paired_ratios
from infra.bench.serving_report import plot_series, table
from infra.bench.serving_targets import loop_figures, serving_targets, worker_figures
from infra.bench.summary import Measured, single, summarize
from tests.unit.test_bench_report import e2e


def run(
    server: str,
    concurrency: int,
    round_: int,
    calls_per_s: float,
    cpu_ms: float = 0.2,
    p50_ms: float = 1.0,
    p99_ms: float = 10.0,
    processes: int = 1,
) -> Result:
    call = MODEL_INFER if server in (UNBATCHED, BATCHED) else PREDICT
    return Result(
        Case(server, call, concurrency),
        calls_per_s,
        p50_ms,
        5.0,
        p99_ms,
        100,
        0,
        cpu_ms_per_call=cpu_ms,
        round=round_,
        driver_cores=0.3 if server == SERVICE_2 else 0.2,
        broker_cores=0.1,
        processes=processes,
    )


def test_spread_is_the_median_with_the_minimum_and_maximum() -> None:
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, 3)
    assert Spread.of([1.0, 2.0, 4.0, 10.0]).median == 3.0  # even count: the middle two's mean
    # A run with no figure (no call answered, so no latency) is left out, not a median of NaN.
    assert Spread.of([float("nan"), 5.0, 7.0]) == Spread(6.0, 5.0, 7.0, 2)
    empty = Spread.of([])
    assert empty.count == 0 and math.isnan(empty.median)


def test_spread_shows_a_range_only_when_there_is_one() -> None:
    assert Spread.of([0.58, 0.51, 0.63]).format(suffix="x") == "0.58x (0.51-0.63)"
    assert Spread.of([0.6]).format(suffix="x") == "0.60x"
    assert Spread.of([2.0, 2.0]).format(".1f", " ms") == "2.0 ms"
    assert Spread.of([1234.0, 1500.0, 990.0]).format(",.0f") == "1,234 (990-1,500)"


def test_compared_cases_take_turns_round_after_round_before_the_next_group() -> None:
    order = interleaved(["a1", "b1", "a64", "c1", "b64"], 2, lambda name: name[1:])
    assert order == [
        (0, "a1"),
        (0, "b1"),
        (0, "c1"),
        (1, "a1"),
        (1, "b1"),
        (1, "c1"),
        (0, "a64"),
        (0, "b64"),
        (1, "a64"),
        (1, "b64"),
    ]


def test_the_benchmark_order_interleaves_trivial_service_and_mlserver() -> None:
    order = interleaved(cases(with_mlserver=True), 3, lambda case: case.compared)
    servers = [case.server for _, case in order[:10]]
    one_round = [TRIVIAL, SERVICE, SERVICE_2, UNBATCHED, BATCHED]
    assert servers == one_round * 2
    assert [round_ for round_, _ in order[:15]] == [0] * 5 + [1] * 5 + [2] * 5
    assert {case.concurrency for _, case in order[:15]} == {1}
    # Every case runs once per round, nothing more.
    assert len(order) == 3 * len(cases(with_mlserver=True))


def test_only_the_multi_worker_service_opens_several_connections() -> None:
    assert Case(SERVICE_2, PREDICT, 64).connections == 8
    assert Case(SERVICE_2, PREDICT, 1).connections == 1  # ghz needs a call per connection
    assert Case(SERVICE, PREDICT, 64).connections == 1
    assert Case(TRIVIAL, PREDICT, 64).connections == 1


def test_ratios_pair_runs_of_the_same_round() -> None:
    ratios = paired_ratios({0: 3.0, 1: 2.0, 2: 9.0}, {0: 6.0, 1: 1.0, 3: 1.0})
    assert ratios == [0.5, 2.0]  # round 2 has no denominator, round 3 no numerator
    assert paired_ratios({0: 1.0}, {0: 0.0}) == []


ROUNDS = [
    run(TRIVIAL, 64, 0, 5000.0, cpu_ms=0.20),
    run(SERVICE, 64, 0, 3000.0, cpu_ms=0.30, p99_ms=40.0),
    run(SERVICE_2, 64, 0, 3300.0, cpu_ms=0.35, processes=3),
    run(TRIVIAL, 64, 1, 4000.0, cpu_ms=0.20),
    run(SERVICE, 64, 1, 2800.0, cpu_ms=0.50, p99_ms=60.0),
    run(SERVICE_2, 64, 1, 3100.0, cpu_ms=0.40, processes=3),
    run(TRIVIAL, 64, 2, 6000.0, cpu_ms=0.25),
    run(SERVICE, 64, 2, 3000.0, cpu_ms=0.40, p99_ms=45.0),
    run(SERVICE_2, 64, 2, 3200.0, cpu_ms=0.45, processes=3),
]


def test_a_ratio_is_the_median_of_the_ratios_within_each_round() -> None:
    service = single(summarize(ROUNDS), SERVICE, 64)
    assert service is not None
    # 3000/5000, 2800/4000, 3000/6000: not the ratio of the medians (3000 / 5000).
    assert service.vs_trivial == Spread(0.6, 0.5, 0.7, 3)
    cpu = service.cpu_vs_trivial  # 0.30/0.20, 0.50/0.20, 0.40/0.25
    assert (cpu.median, cpu.low, cpu.high) == pytest.approx((1.6, 1.5, 2.5))
    assert service.calls_per_s == Spread(3000.0, 2800.0, 3000.0, 3)
    assert service.p99_ms.median == 45.0
    trivial = single(summarize(ROUNDS), TRIVIAL, 64)
    assert trivial is not None and trivial.vs_trivial.median == 1.0


def test_the_table_shows_medians_with_their_ranges() -> None:
    [_, _, trivial, service, two] = table(ROUNDS)
    assert "| 0.60x (0.50-0.70) |" in service
    assert "| 1.60x (1.50-2.50) |" in service  # CPU per call
    assert "| 3,000 (2,800-3,000) |" in service
    assert "| 3 |" in two  # processes
    assert trivial.startswith("| trivial Predict | 64 | 3 |")


def test_issue_17_targets_are_judged_on_the_medians() -> None:
    lone = [
        run(TRIVIAL, 1, 0, 2000.0, p50_ms=0.4),
        run(SERVICE, 1, 0, 700.0, p50_ms=1.2),
        run(TRIVIAL, 1, 1, 2000.0, p50_ms=0.4),
        run(SERVICE, 1, 1, 600.0, p50_ms=1.6),
        run(TRIVIAL, 1, 2, 2000.0, p50_ms=0.4),
        run(SERVICE, 1, 2, 650.0, p50_ms=1.4),
    ]
    measured = Measured([*lone, *ROUNDS], 10, 10, 190.0, "", e2e(), [19_000.0, 21_000.0, 22_000.0])
    found = {t.what: t for t in serving_targets(measured, summarize(measured.results))}
    calls = found["Predict c=64: calls/s vs the trivial grpc.aio server"]
    assert calls.met is True and calls.figure.startswith("0.60x (0.50-0.70)")
    assert found["Predict c=64: server CPU per call vs trivial"].met is False  # 1.6x > 1.4x
    assert found["Predict c=64: p99"].met is True  # median 45 ms; one run was 60
    p50 = found["Predict c=1: p50, each answer after Kafka acknowledged its event"]
    assert p50.met is True and p50.figure.startswith("1.4 ms (1.2-1.6)")
    recorder = found["recorder alone, one instance: topic -> committed rows"]
    assert recorder.met is True  # median 21,000; one run was below 20,000
    assert recorder.figure.startswith("21,000 events/s (19,000-22,000)")


def test_an_answer_without_its_event_misses_the_latency_target() -> None:
    fast = [run(TRIVIAL, 1, 0, 2000.0, p50_ms=0.4), run(SERVICE, 1, 0, 900.0, p50_ms=1.0)]
    measured = Measured(fast, 10, 9, 190.0, "", e2e())
    [p50, recorder] = serving_targets(measured, summarize(fast))
    assert p50.met is False and "no event" in p50.figure
    assert recorder.met is None and recorder.figure == "not measured in this run"


def test_the_two_worker_case_has_figures_and_its_process_count_but_no_verdict() -> None:
    [two] = worker_figures(summarize(ROUNDS))
    assert two.met is None
    assert "(3 server processes seen)" in two.what
    assert "ghz took 0.30 and the broker 0.10 (one worker: 0.20 and 0.10)" in two.figure
    assert two.figure.startswith("0.66x (0.53-0.78)")  # 3300/5000, 3100/4000, 3200/6000


def test_both_servers_also_run_on_asyncios_loop_at_64_only() -> None:
    found = [case for case in cases(with_mlserver=False) if case.server in EVENT_LOOP_CASES]
    assert {(case.server, case.concurrency) for case in found} == {
        (SERVICE_ASYNCIO, 64),
        (TRIVIAL_ASYNCIO, 64),
    }
    assert Case(SERVICE_ASYNCIO, PREDICT, 64).label == "service Predict, asyncio loop"
    assert Case(TRIVIAL_ASYNCIO, PREDICT, 64).label == "trivial Predict, asyncio loop"


EVENT_LOOP_CASES = (SERVICE_ASYNCIO, TRIVIAL_ASYNCIO)


def test_what_uvloop_buys_is_paired_within_each_round_with_no_verdict() -> None:
    on_asyncio = [
        run(TRIVIAL_ASYNCIO, 64, 0, 4000.0, cpu_ms=0.25),
        run(SERVICE_ASYNCIO, 64, 0, 2500.0, cpu_ms=0.40),
        run(TRIVIAL_ASYNCIO, 64, 1, 4000.0, cpu_ms=0.20),
        run(SERVICE_ASYNCIO, 64, 1, 2500.0, cpu_ms=0.50),
        run(TRIVIAL_ASYNCIO, 64, 2, 4000.0, cpu_ms=0.25),
        run(SERVICE_ASYNCIO, 64, 2, 2000.0, cpu_ms=0.50),
    ]
    measured = Measured([*ROUNDS, *on_asyncio], 10, 10, 190.0, "", e2e())
    [figure] = loop_figures(measured, summarize(measured.results))
    assert figure.met is None
    # service: 0.30/0.40, 0.50/0.50, 0.40/0.50; trivial: 0.20/0.25, 0.20/0.20, 0.25/0.25
    assert "service: CPU per call 0.80x (0.75-1.00) (0.400 / 0.500 ms)" in figure.figure
    assert "trivial: CPU per call 1.00x (0.80-1.00) (0.200 / 0.250 ms)" in figure.figure
    assert "calls/s 1.20x (1.12-1.50)" in figure.figure  # the service's: 3000/2500, ...
    assert loop_figures(Measured(ROUNDS, 10, 10, 190.0, "", e2e()), summarize(ROUNDS)) == []
    assert "| service Predict, asyncio loop | 64 | 3 |" in "".join(table(measured.results))
    # Not lines of the plot: one concurrency only.
    assert set(plot_series(measured.results)) == {"trivial", "service", "service, 2 workers"}
