"""Serving benchmark: the service beside a trivial gRPC server and MLServer, same machine, same
run, same ghz, every case repeated and interleaved; then the recorder alone and the end-to-end
case.

    python -m infra.bench.serving [--repeats N]     # 3 repeats of 4 s per ghz case by default
    BENCH_QUICK=1 python -m infra.bench.serving     # 2 repeats of 1.5 s per case (smoke)

It starts what it needs itself, in a temporary folder: a Kafka broker (infra.devstack), a
small model trained by `python -m trainer --no-database`, and the servers of infra.bench.peers:
the inference service as real subprocesses (one worker, and STUDENTPERF_WORKERS=2) configured
through the same STUDENTPERF_* variables as production (any already set, such as
STUDENTPERF_MICROBATCH_WAIT_MS, are passed on), a trivial server whose Predict answers a
constant (the ceiling), and MLServer serving the same pipeline. ghz drives every server
(infra.bench.load_driver), in the order of infra.bench.repeats. Then the recorder of
infra.bench.recorder alone, and infra.bench.end_to_end through a service, Kafka, a recorder
and PostgreSQL.

The tables and the targets (infra.bench.serving_targets) go to stdout; full runs also write
docs/benchmarks.md and docs/benchmarks.png (infra.bench.serving_report).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from infra.bench import Bench, end_to_end, recorder
from infra.bench.load_driver import SERVICE, SERVICE_2, WORKERS, Result, cases, run_ghz
from infra.bench.peers import (
    TOPIC,
    Peers,
    cpu_seconds,
    e2e_service,
    process_tree,
    published_events,
    running_peers,
    setup_mlserver,
    train_model,
)
from infra.bench.plot import plot
from infra.bench.process import peak_rss_mb
from infra.bench.repeats import interleaved
from infra.bench.serving_report import DOC, PLOT, e2e_table, notes, plot_series, table, write_doc
from infra.bench.serving_targets import targets, targets_table
from infra.bench.summary import Measured
from infra.devstack import KafkaBroker, PostgresServer, free_port, local_dir, repo_root

DEFAULT_REPEATS, QUICK_REPEATS = 3, 2
SECONDS, QUICK_SECONDS = 4.0, 1.5


@dataclass(frozen=True)
class Plan:
    seconds: float  # per ghz run
    repeats: int
    quick: bool


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _cpu(pid: int | None) -> float:
    return cpu_seconds(pid) if pid is not None else float("nan")


def drive(peers: Peers, broker: KafkaBroker, plan: Plan, folder: Path) -> tuple[list[Result], int]:
    """Every case, `plan.repeats` times, interleaved; and how many predictions the services
    answered OK (each must have its event in the topic)."""
    answered = 1 if peers.mlserver else 0  # check_mlserver's call
    todo = cases(with_mlserver=peers.mlserver is not None)
    warm_ups = {case.server: case for case in todo if case.concurrency == 16}
    for server, case in warm_ups.items():  # connections, caches, worker pools
        warm, _ = run_ghz(peers.addresses[server], case, 1.0, folder, peers.mlserver)
        answered += warm.ok if server in WORKERS else 0
    results = []
    order = interleaved(todo, plan.repeats, lambda case: case.compared)
    for number, (round_, case) in enumerate(order, 1):
        say(
            f"[{number}/{len(order)}] round {round_ + 1}: {case.label} at concurrency "
            f"{case.concurrency} for {plan.seconds:g} s"
        )
        pid = peers.pids[case.server]
        cpu_before, broker_before = cpu_seconds(pid), _cpu(broker.pid)
        started = time.monotonic()
        result, driver_cpu = run_ghz(
            peers.addresses[case.server], case, plan.seconds, folder, peers.mlserver
        )
        wall = time.monotonic() - started
        cpu = cpu_seconds(pid) - cpu_before
        results.append(
            replace(
                result,
                cpu_ms_per_call=cpu * 1000 / result.ok if result.ok else float("nan"),
                round=round_,
                driver_cores=driver_cpu / wall,
                broker_cores=(_cpu(broker.pid) - broker_before) / wall,
                server_cores=cpu / wall,
                processes=len(process_tree(pid)),
            )
        )
        if case.server in WORKERS:
            answered += result.ok * case.students
    return results, answered


async def recorder_alone(broker: KafkaBroker, plan: Plan, folder: Path) -> tuple[list[float], int]:
    """infra.bench.recorder's one-instance case, `plan.repeats` times: events/s of each run."""
    postgres = PostgresServer(folder / "recorder-postgres", port=free_port())
    await postgres.start_and_wait(timeout=120)
    try:
        bench = Bench(broker, postgres, folder, plan.quick)
        count = recorder.QUICK_EVENTS if plan.quick else recorder.EVENTS
        records = recorder.make_events(
            count, recorder.QUICK_STUDENTS if plan.quick else recorder.STUDENTS
        )
        rates = []
        for number in range(plan.repeats):
            say(f"recorder alone, run {number + 1} of {plan.repeats}: {count:,} events")
            topic, dsn = await recorder.fresh_stack(bench)
            await recorder.produce(bench, topic, records)
            run = await recorder.recorders(bench, topic, dsn, count, instances=1)
            rates.append(count / run.seconds)
        return rates, count
    finally:
        postgres.stop()


def measure(folder: Path, plan: Plan) -> Measured:
    say("training a small model")
    train_model(folder / "models")
    mlserver = setup_mlserver(folder, say)
    say("starting Kafka")
    broker = KafkaBroker(folder / "kafka", port=free_port(), controller_port=free_port())
    asyncio.run(broker.start_and_wait(timeout=120))
    try:
        asyncio.run(broker.create_topic(TOPIC, partitions=3))
        with running_peers(folder, broker, mlserver, say) as peers:
            say(
                f"service workers asked: {WORKERS}; processes now: "
                + ", ".join(
                    f"{name} {len(process_tree(peers.pids[name]))}" for name in (SERVICE, SERVICE_2)
                )
            )
            results, answered = drive(peers, broker, plan, folder)
            published = published_events(broker.bootstrap_servers, answered)
            peak_mb = peak_rss_mb(peers.pids[SERVICE])
            spooled = peers.spooled_events()
        # After the servers above have stopped: these cases have the CPUs to themselves.
        rates, events = asyncio.run(recorder_alone(broker, plan, folder))
        e2e = asyncio.run(
            end_to_end.run(folder, broker, e2e_service(folder, broker), plan.quick, say)
        )
        why_not = mlserver if isinstance(mlserver, str) else ""
        return Measured(results, answered, published, peak_mb, why_not, e2e, rates, events, spooled)
    finally:
        broker.stop()


def main() -> None:
    quick = os.environ.get("BENCH_QUICK") == "1"
    parser = argparse.ArgumentParser(prog="python -m infra.bench.serving", description=__doc__)
    parser.add_argument(
        "--repeats",
        type=int,
        default=QUICK_REPEATS if quick else DEFAULT_REPEATS,
        help="runs of each case (make bench REPEATS=N)",
    )
    args = parser.parse_args()
    plan = Plan(QUICK_SECONDS if quick else SECONDS, max(1, args.repeats), quick)
    load_before = os.getloadavg()[0]
    if not (local_dir() / "bin" / "ghz").exists():
        raise SystemExit("ghz is missing: run `bash infra/setup.sh` (SETUP_GHZ=1)")
    with tempfile.TemporaryDirectory(prefix="studentperf-bench-") as folder:
        measured = measure(Path(folder), plan)
    lines = [
        *table(measured.results),
        "",
        *notes(plan.repeats),
        "",
        "## Targets",
        "",
        *targets_table(targets(measured)),
        "",
        "## End to end",
        "",
        *e2e_table(measured.e2e),
    ]
    print("\n".join(lines))
    load_after = os.getloadavg()[0]
    print(
        f"\n{os.cpu_count()} CPUs; load average {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end; {plan.repeats} repeat(s) of {plan.seconds:g} s per case"
    )
    if quick:
        # A smoke run's figures are not the ones to publish.
        say(f"quick run: {DOC.relative_to(repo_root())} left as it is")
        return
    title = (
        f"Serving benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, medians of "
        f"{plan.repeats} x {plan.seconds:g} s per case"
    )
    plot(plot_series(measured.results), title, PLOT)
    write_doc(lines, plan.seconds, plan.repeats, (load_before, load_after))
    say(f"written to {DOC.relative_to(repo_root())} and {PLOT.relative_to(repo_root())}")


if __name__ == "__main__":
    main()
