"""The serving benchmark's targets (issue 17's table first), each against the medians of one run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from infra.bench import end_to_end
from infra.bench.load_driver import (
    BATCH_PREDICT,
    LOOP_CONCURRENCY,
    SERVICE,
    SERVICE_2,
    SERVICE_ASYNCIO,
    TRIVIAL,
    TRIVIAL_ASYNCIO,
)
from infra.bench.repeats import Spread
from infra.bench.summary import MLSERVER, Measured, Summary, paired, single, summarize

# Issue 17.
TARGET_RATIO_AT_64 = 0.6
TARGET_CPU_RATIO_AT_64 = 1.4
TARGET_P99_MS_AT_64 = 50.0
TARGET_P50_MS_AT_1 = 1.5
TARGET_RECORDER_EVENTS_PER_S = 20_000
# Earlier issues.
TARGET_MLSERVER_RATIO_AT_64 = 5.0
TARGET_BATCH_STUDENTS_PER_S = 30_000
TARGET_RSS_MB = 400


@dataclass(frozen=True)
class Target:
    what: str
    figure: str  # the median (with its range over the repeats) and what it was made of
    met: bool | None  # None: not measured in this run, or no target (the goal says which)
    goal: str = ""


def _ratio(spread: Spread, goal: float, at_most: bool = False) -> bool | None:
    if not spread.count:
        return None
    return spread.median <= goal if at_most else spread.median >= goal


def serving_targets(measured: Measured, found: Sequence[Summary]) -> list[Target]:
    """Issue 17's table: the single-call figures at concurrency 64 and 1, and the recorder."""
    targets = []
    service, trivial = single(found, SERVICE, 64), single(found, TRIVIAL, 64)
    if service and trivial:
        targets += [
            Target(
                "Predict c=64: calls/s vs the trivial grpc.aio server",
                f"{service.vs_trivial.format(suffix='x')}; "
                f"{service.calls_per_s.median:,.0f} / {trivial.calls_per_s.median:,.0f} calls/s",
                _ratio(service.vs_trivial, TARGET_RATIO_AT_64),
                f">= {TARGET_RATIO_AT_64:g}x",
            ),
            Target(
                "Predict c=64: server CPU per call vs trivial",
                f"{service.cpu_vs_trivial.format(suffix='x')}; "
                f"{service.cpu_ms_per_call.median:.3f} / {trivial.cpu_ms_per_call.median:.3f} ms",
                _ratio(service.cpu_vs_trivial, TARGET_CPU_RATIO_AT_64, at_most=True),
                f"<= {TARGET_CPU_RATIO_AT_64:g}x",
            ),
        ]
    if service:
        targets.append(
            Target(
                "Predict c=64: p99",
                service.p99_ms.format(".1f", " ms"),
                service.p99_ms.median < TARGET_P99_MS_AT_64,
                f"< {TARGET_P99_MS_AT_64:g} ms",
            )
        )
    lone, lone_trivial = single(found, SERVICE, 1), single(found, TRIVIAL, 1)
    if lone:
        acknowledged = measured.published >= measured.answered
        targets.append(
            Target(
                "Predict c=1: p50, each answer after Kafka acknowledged its event",
                f"{lone.p50_ms.format('.1f', ' ms')}"
                + (f" (trivial {lone_trivial.p50_ms.median:.1f} ms)" if lone_trivial else "")
                + ("" if acknowledged else "; some answers have no event in the topic"),
                lone.p50_ms.median <= TARGET_P50_MS_AT_1 and acknowledged,
                f"<= {TARGET_P50_MS_AT_1:g} ms",
            )
        )
    rates = Spread.of(measured.recorder_rates)
    targets.append(
        Target(
            "recorder alone, one instance: topic -> committed rows",
            f"{rates.format(',.0f', ' events/s')}; {rates.count} runs of "
            f"{measured.recorder_events:,} events (infra/bench/recorder.py)"
            if rates.count
            else "not measured in this run",
            rates.median >= TARGET_RECORDER_EVENTS_PER_S if rates.count else None,
            f">= {TARGET_RECORDER_EVENTS_PER_S:,} events/s",
        )
    )
    return targets


def worker_figures(found: Sequence[Summary]) -> list[Target]:
    """The service with STUDENTPERF_WORKERS=2 beside one worker: figures, no target yet."""
    one, two = single(found, SERVICE, 64), single(found, SERVICE_2, 64)
    if not (one and two):
        return []
    seen = f"{two.processes} server process{'es' if two.processes > 1 else ''} seen"
    return [
        Target(
            f"Predict c=64, STUDENTPERF_WORKERS=2 ({seen}): calls/s vs trivial",
            f"{two.vs_trivial.format(suffix='x')}; {two.calls_per_s.median:,.0f} calls/s "
            f"against {one.calls_per_s.median:,.0f} with one worker; CPU per call "
            f"{two.cpu_ms_per_call.median:.3f} ms against {one.cpu_ms_per_call.median:.3f}; of "
            f"the {os.cpu_count()} cores ghz took {two.driver_cores.median:.2f} and the broker "
            f"{two.broker_cores.median:.2f} (one worker: {one.driver_cores.median:.2f} and "
            f"{one.broker_cores.median:.2f})",
            None,
            "none yet (issue 17, item 3)",
        )
    ]


def loop_figures(measured: Measured, found: Sequence[Summary]) -> list[Target]:
    """What uvloop (the service's default loop, and the trivial server's here) buys each server
    over asyncio's own loop: figures, no target."""
    c = LOOP_CONCURRENCY
    parts = []
    for uv, plain in ((SERVICE, SERVICE_ASYNCIO), (TRIVIAL, TRIVIAL_ASYNCIO)):
        on_uvloop, on_asyncio = single(found, uv, c), single(found, plain, c)
        if not (on_uvloop and on_asyncio):
            return []
        cpu = paired(measured.results, uv, plain, c, "cpu_ms_per_call")
        calls = paired(measured.results, uv, plain, c, "calls_per_s")
        parts.append(
            f"{uv}: CPU per call {cpu.format('.2f', 'x')} "
            f"({on_uvloop.cpu_ms_per_call.median:.3f} / {on_asyncio.cpu_ms_per_call.median:.3f} "
            f"ms), calls/s {calls.format('.2f', 'x')}"
        )
    return [
        Target(
            f"Predict c={c}: uvloop over asyncio's loop, same round",
            "; ".join(parts),
            None,
            "none (shows what the loop buys)",
        )
    ]


def other_targets(measured: Measured, found: Sequence[Summary]) -> list[Target]:
    """Earlier issues' targets, still checked."""
    targets = []
    service = single(found, SERVICE, 64)
    what = "Predict c=64 vs MLServer's best (either configuration, any concurrency)"
    goal = f">= {TARGET_MLSERVER_RATIO_AT_64:g}x"
    mlserver = [s for s in found if s.case.server in MLSERVER]
    if measured.mlserver:
        targets.append(Target(what, f"not measured: {measured.mlserver}", None, goal))
    elif service and mlserver:
        # MLServer's best at any concurrency: its batching may peak below 64 calls in flight.
        best = max(mlserver, key=lambda s: s.calls_per_s.median)
        ratio = service.calls_per_s.median / best.calls_per_s.median
        targets.append(
            Target(
                what,
                f"{ratio:.1f}x ({service.calls_per_s.median:,.0f} / "
                f"{best.calls_per_s.median:,.0f} calls/s, {best.case.label}, concurrency "
                f"{best.case.concurrency}; medians)",
                ratio >= TARGET_MLSERVER_RATIO_AT_64,
                goal,
            )
        )
    batches = [s for s in found if s.case.call == BATCH_PREDICT]
    batch = max((s.students_per_s.median for s in batches), default=0.0)
    # What the service's own CPU time allows, whatever else the machine runs meanwhile.
    per_cpu_s = max(
        (s.case.students / s.cpu_ms_per_call.median * 1000 for s in batches), default=0.0
    )
    targets += [
        Target(
            "BatchPredict, every event published",
            f"{batch:,.0f} students/s ({per_cpu_s:,.0f} per second of the service's CPU)",
            batch >= TARGET_BATCH_STUDENTS_PER_S,
            f">= {TARGET_BATCH_STUDENTS_PER_S:,} students/s",
        ),
        Target(
            "every prediction answered OK has its event in Kafka",
            f"{measured.answered:,} answered, {measured.published:,} events in the topic",
            measured.published >= measured.answered,
            "all",
        ),
        Target(
            "every event published straight, none through the spool (else a call's figures "
            "include the spool's fsync and replay)",
            f"{measured.spooled:,} events spooled",
            measured.spooled == 0,
            "0",
        ),
    ]
    e2e = measured.e2e
    targets += [
        Target(
            f"end to end at {end_to_end.RATE:,.0f} predictions/s: p99 lag",
            f"p99 {e2e.lag_p99_ms:,.0f} ms (p50 {e2e.lag_p50_ms:,.0f} ms) at {e2e.rate:,.0f} "
            "answered/s (one run)",
            e2e.lag_p99_ms < end_to_end.TARGET_P99_LAG_S * 1000,
            f"< {end_to_end.TARGET_P99_LAG_S:g} s",
        ),
        Target(
            "end to end: backlog",
            f"{e2e.backlog_middle:,} rows behind mid-load, {e2e.backlog_end:,} at its end; "
            f"{e2e.stored:,} of {e2e.ok:,} answered stored, the last {e2e.drain_s:.1f} s after "
            "the load",
            e2e.keeps_up,
            "not growing, every answer stored",
        ),
        Target(
            "recorder peak RSS",
            f"{e2e.recorder_peak_mb:.0f} MiB (end-to-end case)",
            e2e.recorder_peak_mb < end_to_end.TARGET_RECORDER_RSS_MB,
            f"< {end_to_end.TARGET_RECORDER_RSS_MB} MB",
        ),
        Target(
            "inference service peak RSS",
            f"{measured.peak_mb:.0f} MiB over the ghz cases, {e2e.service_peak_mb:.0f} MiB "
            "in the end-to-end case",
            max(measured.peak_mb, e2e.service_peak_mb) < TARGET_RSS_MB,
            f"< {TARGET_RSS_MB} MB",
        ),
    ]
    return targets


def targets(measured: Measured) -> list[Target]:
    found = summarize(measured.results)
    return [
        *serving_targets(measured, found),
        *worker_figures(found),
        *loop_figures(measured, found),
        *other_targets(measured, found),
    ]


def targets_table(found: Sequence[Target]) -> list[str]:
    verdicts = {True: "met", False: "**missed**", None: "-"}
    return [
        "| figure | median (min-max) this run | target | met |",
        "|---|---|---|---|",
        *(f"| {t.what} | {t.figure} | {t.goal} | {verdicts[t.met]} |" for t in found),
    ]
