"""The serving benchmark's tables, plot series and docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime

from infra.bench import end_to_end
from infra.bench.end_to_end import EndToEnd
from infra.bench.load_driver import (
    BATCH_PREDICT,
    LOOP_CONCURRENCY,
    MULTI_WORKER_CONNECTIONS,
    SERVICE,
    SERVICE_2,
    TRIVIAL,
    Result,
)
from infra.bench.mlserver_peer import (
    BATCHED,
    MAX_BATCH_SIZE,
    MAX_BATCH_TIME_S,
    MLSERVER_VERSION,
    UNBATCHED,
)
from infra.bench.plot import Point
from infra.bench.repeats import Spread
from infra.bench.summary import summarize
from infra.devstack import repo_root

DOC = repo_root() / "docs" / "benchmarks.md"
PLOT = DOC.with_suffix(".png")


# How the figures are made: the doc says so before any of them.
METHOD = (
    "One run of a case on a shared machine moves by a third, so every case runs "
    "several times (`REPEATS`, 3 by default) and each figure is the median of its "
    "runs, shown with its range (minimum-maximum). The runs are interleaved: at "
    "each concurrency the trivial server, the service with 1 and 2 workers and "
    "MLServer take turns (trivial, service, service x2, MLServer, trivial, ...), "
    "round after round, so a burst of other work lands on all of them rather than on "
    "one. A ratio (calls/s, CPU per call) is taken within a round, between runs "
    "moments apart, and the median of those ratios is reported with their range. "
    "CPU per call (the server's process-tree CPU time from /proc over its OK calls) "
    "is the steadier figure: it hardly depends on what else the machine runs, while "
    "calls/s and latencies do. The cores column says how much of the machine's "
    "CPUs the server, ghz and the Kafka broker took during each case; the rest went "
    "to other work. The recorder runs alone afterwards, `REPEATS` times, on its own "
    "topic and database each time (infra/bench/recorder.py's one-instance case), "
    "and the end-to-end case once. Latency percentiles are each run's own (ghz's "
    "histogram over the run); the tables show the median of them over the runs. The "
    "target table lists issue 17's figures first: the median (min-max over the repeats), "
    "the target, met or missed, judged on the median. Event loops: the service's processes "
    "run on uvloop, their default (`STUDENTPERF_EVENT_LOOP`), and so does the trivial server, "
    "so CPU per call x trivial measures the service's own work over gRPC's on the same loop; "
    "at concurrency 64 both also run on asyncio's own loop (the `asyncio loop` rows, their "
    "x trivial columns still against the trivial server on uvloop), and the table of figures "
    "says what uvloop buys each, as ratios within a round. `BENCH_QUICK=1` (2 repeats of "
    "1.5 s per case, 2,000 recorder events) is a smoke run whose figures mean nothing "
    "and which leaves this file alone."
)


def _or_dash(spread: Spread, spec: str, suffix: str = "", bold: bool = False) -> str:
    if not spread.count:
        return "-"
    text = spread.format(spec, suffix)
    return f"**{text}**" if bold else text


def table(results: Sequence[Result]) -> list[str]:
    """One row per case: medians over its runs (the range beside the figures compared), each
    single-student case's calls/s and CPU per call over the trivial server's in the same round
    and concurrency, the service's over MLServer's better configuration there, and how many
    cores the server, ghz and the Kafka broker used meanwhile."""
    lines = [
        "| case | concurrency | runs | calls/s | students/s | p50 ms | p95 ms | p99 ms | errors "
        "| x trivial | service x MLServer best | server CPU ms/call | CPU/call x trivial "
        "| processes | cores: server / ghz / broker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summarize(results):
        lines.append(
            f"| {s.case.label} | {s.case.concurrency} | {s.runs} | "
            f"{s.calls_per_s.format(',.0f')} | {s.students_per_s.median:,.0f} | "
            f"{s.p50_ms.median:.1f} | {s.p95_ms.median:.1f} | {s.p99_ms.median:.1f} | "
            f"{s.errors} | {_or_dash(s.vs_trivial, '.2f', 'x')} | "
            f"{_or_dash(s.vs_mlserver, '.1f', 'x', bold=True)} | "
            f"{s.cpu_ms_per_call.format('.3f')} | {_or_dash(s.cpu_vs_trivial, '.2f', 'x')} | "
            f"{s.processes} | {s.server_cores.median:.2f} / {s.driver_cores.median:.2f} / "
            f"{s.broker_cores.median:.2f} |"
        )
    return lines


def notes(repeats: int) -> list[str]:
    return [
        f"- every case ran {repeats} time(s), interleaved: at each concurrency the trivial "
        "server, the service (1 and 2 workers) and MLServer take turns, round after round. "
        "Figures are medians over the runs; `a (b-c)` is the median with the minimum and maximum. "
        "A ratio is taken within a round (against the trivial server or MLServer measured "
        "moments before or after), then its median is shown.",
        "- errors: calls that failed over every run, leaving out those in flight when ghz closed "
        "its connection at the end of a run; calls/s counts answers that were OK.",
        "- the topic may hold a few more events than answers: calls ghz cut off at the end of a "
        "run after their publish.",
        "- server CPU ms/call: the server process's (and its children's) CPU time over the run "
        "per OK call, from /proc; steadier than calls/s when other work shares the machine. "
        "Kafka's broker CPU for the service's events is not in it.",
        "- cores: CPU time over the run's wall time of the server (its process tree), ghz, and "
        f"the Kafka broker, out of {os.cpu_count()}; what other work on the machine took is the "
        "rest.",
        f"- STUDENTPERF_WORKERS=2: ghz opens {MULTI_WORKER_CONNECTIONS} connections (fewer at "
        "lower concurrency) so that SO_REUSEPORT can spread them over the workers; every other "
        "case uses one. processes: the server's process tree as seen at the end of a run; a "
        "service that ignores STUDENTPERF_WORKERS shows 1.",
        "- event loop: every server here runs on uvloop (the service's default) but the rows "
        f"marked `asyncio loop` (concurrency {LOOP_CONCURRENCY} only), which run on asyncio's "
        "own; their x trivial columns compare them with the trivial server on uvloop.",
    ]


def e2e_table(e2e: EndToEnd) -> list[str]:
    failed = (
        ", ".join(
            f"{n:,} {code} (first: {e2e.first_errors.get(code, '?')!r})"
            for code, n in e2e.failed.items()
        )
        or "none"
    )
    return [
        f"Open-loop load of {end_to_end.RATE:,.0f} Predict/s from another process "
        "(`infra.bench.steady_load`) through the inference service, Kafka, one recorder and "
        "PostgreSQL, once. Lag per prediction is measured two ways that bracket the commit: when "
        f"a poller reading `predictions` every {end_to_end.POLL_S * 1000:g} ms first saw the row "
        "(visible means committed; late by at most a poll), and the row's `recorded_at` "
        "(PostgreSQL's now(), the recorder transaction's start, so before its commit); both "
        "minus `predicted_at` (the event's `occurred_at`, stamped by the service when it "
        "predicted). Same host, same clock.",
        "",
        "| figure | this run |",
        "|---|---|",
        f"| answered OK, failed | {e2e.ok:,}, {failed} |",
        f"| answered per second (target rate {end_to_end.RATE:,.0f}) | {e2e.rate:,.0f} |",
        f"| lag to first seen, p50 / p99 / max | {e2e.lag_p50_ms:,.0f} / {e2e.lag_p99_ms:,.0f} "
        f"/ {e2e.lag_max_ms:,.0f} ms |",
        f"| lag to `recorded_at`, p50 / p99 | {e2e.recorded_p50_ms:,.0f} / "
        f"{e2e.recorded_p99_ms:,.0f} ms |",
        f"| rows not yet visible, mid-load / end of load | {e2e.backlog_middle:,} / "
        f"{e2e.backlog_end:,} |",
        f"| rows stored, last one after the load ended | {e2e.stored:,}, {e2e.drain_s:.1f} s |",
        f"| load generator's own lateness, p99 | {e2e.generator_slip_p99_ms:.1f} ms |",
        f"| peak RSS: recorder, inference service | {e2e.recorder_peak_mb:.0f} MiB, "
        f"{e2e.service_peak_mb:.0f} MiB |",
    ]


SERIES = {
    TRIVIAL: "trivial",
    SERVICE: "service",
    SERVICE_2: "service, 2 workers",
    UNBATCHED: "MLServer, batching off",
    BATCHED: "MLServer, adaptive batching",
}


def plot_series(results: Sequence[Result]) -> dict[str, list[Point]]:
    """Medians per single-student case, one line per server."""
    series: dict[str, list[Point]] = {}
    for s in summarize(results):
        if s.case.call != BATCH_PREDICT:
            point = Point(
                s.case.concurrency, s.calls_per_s.median, s.p50_ms.median, s.p99_ms.median
            )
            if s.case.server in SERIES:  # not the asyncio-loop cases: one concurrency only
                series.setdefault(SERIES[s.case.server], []).append(point)
    return series


def write_doc(
    lines: Sequence[str], seconds: float, repeats: int, load: tuple[float, float]
) -> None:
    busy = " (more runnable work than CPUs: other work was running too, so expect low figures)"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(
        "\n".join(
            [
                "# Serving benchmark",
                "",
                "Made by `python -m infra.bench.serving` (`make bench`, `make bench REPEATS=5`; "
                "`BENCH_QUICK=1` for a smoke run that leaves this file alone). One run, one "
                "machine, one load generator (ghz), four servers: the service (real subprocess, "
                "real Kafka, every event acknowledged before the answer), with one worker and "
                "with `STUDENTPERF_WORKERS=2`; a trivial `grpc.aio` server whose Predict returns "
                "a constant, the Python gRPC ceiling; and MLServer "
                f"{MLSERVER_VERSION} with its scikit-learn runtime serving the same trained "
                "pipeline (installed by the benchmark in `.local/mlserver-venv`), once with "
                "adaptive batching off and once on (up to "
                f"{MAX_BATCH_SIZE} requests or {MAX_BATCH_TIME_S * 1000:g} ms). Absolute figures "
                "move with the machine and its load (other work shares these cores); compare "
                "the ratios, and CPU per call before calls/s.",
                "",
                "## Method",
                "",
                METHOD,
                "",
                f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {repeats} repeat(s) of "
                f"{seconds:g} s per case, {os.cpu_count()} CPU(s), Python "
                f"{platform.python_version()}, ghz and the servers sharing the CPUs; load "
                f"average {load[0]:.1f} at the start and {load[1]:.1f} at the end"
                f"{busy if max(load) > (os.cpu_count() or 1) else ''}.",
                "",
                f"![throughput, p50 and p99 by concurrency (medians)]({PLOT.name})",
                "",
                *lines,
                "",
                "Reading the table: unlike the trivial server, each service call validates the "
                "student, runs the model, builds and serializes an event, and answers only once "
                "Kafka (a broker on the same two cores, `acks=all`) has acknowledged it. At "
                "concurrency 1 that round trip is most of the latency, so the ratio there "
                "measures the broker, not the serving path; at 16 and 64 concurrent calls share "
                "micro-batches and producer batches. The broker's CPU comes out of the same two "
                "cores the service and ghz use. With 2 workers on 2 cores shared with ghz and "
                "the broker, a second process mostly adds contention; the case shows what it "
                "costs or gains here, not on a larger machine.",
                "",
                "MLServer is asked for less per call than the service: one pipeline (the "
                "predicted score; the service also runs the pass classifier), no event, no "
                "Kafka; each call carries the same full student as a pandas request (one "
                "tensor per feature), the way its scikit-learn runtime takes a pipeline's "
                "columns. Before timing, its answer for one student is checked against the "
                "service's. Its defaults are kept (one inference worker process).",
                "",
                "Where the service's CPU goes at concurrency 64 (cProfile of the service under "
                "ghz, 2026-11-23; the profiler inflates Python code more than C, so only the "
                "rough shares mean anything): about 60% in the gRPC runtime and the asyncio "
                "loop, the part the trivial server pays too; about 20-25% in aiokafka (building "
                "produce requests, the sender task, socket sends to the broker); about 15% in "
                "the service's own code (checking and encoding the student, the compiled model, "
                "building and serializing events). A py-spy profile (2026-12-04, asyncio's loop, "
                "concurrency 64, Python threads only) splits the first part: about 44% in native "
                "code the loop's callbacks run (gRPC's Cython, protobuf, C tasks), 14% in gRPC's "
                "completion-queue poller thread, 12% in the selector's epoll call and 13% in "
                "asyncio's own Python code, the part uvloop does in C. Garbage collection took "
                "about 2% (gc.callbacks), 0.7% since the youngest generation is collected every "
                "10,000 allocations rather than 700 (inference_service/server.py).",
                "",
                "The end-to-end case runs after the servers above have stopped. Its lag is mostly "
                "the recorder's batching by design: a batch closes when full (4,000 events) or "
                "200 ms after its first event (`STUDENTPERF_BATCH_MAX_WAIT_MS`), and Kafka's "
                "consumer fetch adds its own wait; then one transaction per write shard "
                "writes the batch.",
                "",
            ]
        )
    )
