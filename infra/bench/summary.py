"""What the serving benchmark's repeated runs say per case: medians and ranges, each ratio taken
within a round (against the trivial server and MLServer measured just before or after)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from infra.bench.end_to_end import EndToEnd
from infra.bench.load_driver import BATCH_PREDICT, TRIVIAL, TRIVIAL_ASYNCIO, Case, Result
from infra.bench.mlserver_peer import BATCHED, UNBATCHED
from infra.bench.repeats import Spread, paired_ratios

MLSERVER = (UNBATCHED, BATCHED)


@dataclass
class Measured:
    results: list[Result]  # every run of every case, all rounds
    answered: int  # predictions the service answered OK: each must have its event in the topic
    published: int
    peak_mb: float  # the inference service's (one worker)
    mlserver: str  # "" when measured, else why not
    e2e: EndToEnd
    recorder_rates: list[float] = field(default_factory=list)  # events/s, one recorder, per run
    recorder_events: int = 0  # per run
    # Events the services spooled over the ghz cases (Kafka did not acknowledge a publish in
    # time); any means those calls paid for the spool's fsync, not for a straight publish.
    spooled: int = 0


@dataclass(frozen=True)
class Summary:
    case: Case
    runs: int
    calls_per_s: Spread
    students_per_s: Spread
    p50_ms: Spread
    p95_ms: Spread
    p99_ms: Spread
    cpu_ms_per_call: Spread
    errors: int  # over every run
    vs_trivial: Spread  # calls/s over the trivial server's, same round and concurrency
    cpu_vs_trivial: Spread  # CPU per call over the trivial server's, likewise
    vs_mlserver: Spread  # calls/s over MLServer's better configuration, likewise
    driver_cores: Spread
    broker_cores: Spread
    server_cores: Spread
    processes: int  # the most seen in the server's process tree


def _single(case: Case) -> bool:
    return case.call != BATCH_PREDICT


def _by_round(
    results: Sequence[Result], servers: Sequence[str], concurrency: int, attribute: str
) -> dict[int, float]:
    """Per round, the single-student runs of `servers` at `concurrency`: the attribute of the
    one with the most calls/s (several servers: the better MLServer configuration)."""
    best: dict[int, Result] = {}
    for r in results:
        if r.case.server not in servers or not _single(r.case) or r.case.concurrency != concurrency:
            continue
        if r.round not in best or r.calls_per_s > best[r.round].calls_per_s:
            best[r.round] = r
    return {round_: float(getattr(r, attribute)) for round_, r in best.items()}


def summarize(results: Sequence[Result]) -> list[Summary]:
    """One summary per case, in the order the cases first ran."""
    order = list(dict.fromkeys(r.case for r in results))
    found = []
    for case in order:
        runs = [r for r in results if r.case == case]
        nothing = Spread.of([])
        vs_trivial = cpu_vs_trivial = vs_mlserver = nothing
        if _single(case):
            c = case.concurrency
            mine = {r.round: r for r in runs}
            calls = {round_: r.calls_per_s for round_, r in mine.items()}
            cpu = {round_: r.cpu_ms_per_call for round_, r in mine.items()}
            trivial = (TRIVIAL,)
            vs_trivial = Spread.of(
                paired_ratios(calls, _by_round(results, trivial, c, "calls_per_s"))
            )
            cpu_vs_trivial = Spread.of(
                paired_ratios(cpu, _by_round(results, trivial, c, "cpu_ms_per_call"))
            )
            if case.server not in (TRIVIAL, TRIVIAL_ASYNCIO, *MLSERVER):
                vs_mlserver = Spread.of(
                    paired_ratios(calls, _by_round(results, MLSERVER, c, "calls_per_s"))
                )
        found.append(
            Summary(
                case=case,
                runs=len(runs),
                calls_per_s=Spread.of(r.calls_per_s for r in runs),
                students_per_s=Spread.of(r.students_per_s for r in runs),
                p50_ms=Spread.of(r.p50_ms for r in runs),
                p95_ms=Spread.of(r.p95_ms for r in runs),
                p99_ms=Spread.of(r.p99_ms for r in runs),
                cpu_ms_per_call=Spread.of(r.cpu_ms_per_call for r in runs),
                errors=sum(r.errors for r in runs),
                vs_trivial=vs_trivial,
                cpu_vs_trivial=cpu_vs_trivial,
                vs_mlserver=vs_mlserver,
                driver_cores=Spread.of(r.driver_cores for r in runs),
                broker_cores=Spread.of(r.broker_cores for r in runs),
                server_cores=Spread.of(r.server_cores for r in runs),
                processes=max(r.processes for r in runs),
            )
        )
    return found


def paired(
    results: Sequence[Result], server: str, peer: str, concurrency: int, attribute: str
) -> Spread:
    """`server`'s attribute over `peer`'s, round by round (single-student runs)."""
    return Spread.of(
        paired_ratios(
            _by_round(results, (server,), concurrency, attribute),
            _by_round(results, (peer,), concurrency, attribute),
        )
    )


def single(summaries: Sequence[Summary], server: str, concurrency: int) -> Summary | None:
    """The single-student Predict (or ModelInfer) case of `server` at `concurrency`."""
    return next(
        (
            s
            for s in summaries
            if s.case.server == server and _single(s.case) and s.case.concurrency == concurrency
        ),
        None,
    )
