"""Runs the benchmark cases against a Kafka broker and a PostgreSQL server of their own.

    python -m infra.bench [--quick] [--repeat N] [--case NAME ...]
    (make bench; BENCH_QUICK=1 for --quick, BENCH_REPEAT=N for --repeat)

The services run in a temporary folder on free ports, so a running `make up` stack is not
disturbed; everything is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from infra.bench import Bench, Case, Row, flood, recorder, table
from infra.devstack import KafkaBroker, PostgresServer, free_port

# Every case, in the order the table shows them.
CASES: dict[str, Case] = {
    "recorder": recorder.run,
    "flood": flood.run,
}


async def run(names: list[str], quick: bool, repeat: int) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="studentperf-bench-"))
    kafka = KafkaBroker(
        work / "kafka",
        port=free_port(),
        controller_port=free_port(),
        # Members started together join one generation instead of rebalancing at once.
        extra_properties={"group.initial.rebalance.delay.ms": "3000"},
    )
    postgres = PostgresServer(work / "postgres", port=free_port())
    rows: list[Row] = []
    try:
        for service in (kafka, postgres):
            await service.start_and_wait(timeout=120)
        bench = Bench(kafka, postgres, work, quick, repeat)
        for name in names:
            started = time.monotonic()
            print(f"[bench] {name} ...", flush=True)
            rows += await CASES[name](bench)
            print(f"[bench] {name}: done in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        for service in (postgres, kafka):
            service.stop()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", "1")))
    parser.add_argument("--case", action="append", choices=sorted(CASES), dest="cases")
    args = parser.parse_args()
    # A fresh broker answers "coordinator not available" while it creates its offsets topic;
    # aiokafka logs each retry as an error. Every case checks its own results instead.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    load_before = os.getloadavg()[0]
    rows = asyncio.run(run(args.cases or list(CASES), args.quick, max(1, args.repeat)))
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after"
        f"{' (quick smoke run: figures not meaningful)' if args.quick else ''}\n"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
