"""A flood of maximum-size requests, with and without a token: the service's peak memory.

The inference service runs as a real subprocess (`python -m inference_service`, bearer tokens
on) against the run's Kafka broker. Callers on several connections keep requests of the
largest size the service accepts in flight, in three kinds at once:
- without a token: refused UNAUTHENTICATED before they are read or decoded;
- with a token, `BatchPredict` of nothing but empty students (the most memory a request can
  cost once decoded, about 25 times its bytes), refused INVALID_ARGUMENT after decoding;
- with a token, the largest valid `BatchPredict` (10,000 students, every field at its longest),
  predicted and published.
The figure is the service's peak resident set (VmHWM from /proc) over the flood, beside the
400 MB target; the note gives the resident set before, and every status code counted.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

from infra.bench import Bench, Row
from infra.bench.peers import service_env, train_model, wait_serving
from infra.bench.process import peak_rss_mb
from infra.devstack import free_port
from infra.processes import started as process
from studentperf.largest_items import largest_student
from studentperf.limits import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_REQUEST_BYTES
from studentperf.v1 import prediction_service_pb2 as api

CASE = "flood"
TARGET_RSS_MB = 400
TOKEN = "bench-flood-token-0123456789"
BATCH_PREDICT = "/studentperf.v1.PredictionService/BatchPredict"
CHANNELS = 4
# Calls in flight at once, for each kind, spread over the channels; and for how long.
CALLS_PER_KIND, QUICK_CALLS_PER_KIND = 12, 2
SECONDS, QUICK_SECONDS = 20.0, 1.0
Kind = tuple[str, bytes, str | None]


def empty_students() -> bytes:
    """A BatchPredictRequest of empty students, as many as the size limit lets through."""
    return b"\x0a\x00" * (DEFAULT_MAX_REQUEST_BYTES // 2)


def largest_valid() -> bytes:
    students = [largest_student(f"{number:064d}") for number in range(DEFAULT_MAX_BATCH_SIZE)]
    return api.BatchPredictRequest(students=students).SerializeToString()


def kinds() -> list[Kind]:
    empty = empty_students()
    return [
        ("no token", empty, None),
        ("token, empty students", empty, TOKEN),
        ("token, largest valid", largest_valid(), TOKEN),
    ]


async def caller(
    channel: grpc.aio.Channel, kind: Kind, until: float, codes: Counter[tuple[str, str]]
) -> None:
    name, payload, token = kind
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(BATCH_PREDICT)
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    while time.monotonic() < until:
        try:
            await call(payload, timeout=60, metadata=metadata)
            codes[name, "OK"] += 1
        except grpc.aio.AioRpcError as error:
            codes[name, error.code().name] += 1


async def flood(
    address: str, seconds: float, calls_per_kind: int
) -> tuple[Counter[tuple[str, str]], float]:
    codes: Counter[tuple[str, str]] = Counter()
    options = [("grpc.max_receive_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(CHANNELS)]
    started = time.monotonic()
    try:
        until = started + seconds
        await asyncio.gather(
            *(
                caller(channels[number % CHANNELS], kind, until, codes)
                for kind in kinds()
                for number in range(calls_per_kind)
            )
        )
    finally:
        for channel in channels:
            await channel.close()
    return codes, time.monotonic() - started


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def run(bench: Bench) -> list[Row]:
    folder = bench.work_dir / "flood"
    folder.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(train_model, folder / "models")
    address = f"127.0.0.1:{free_port()}"
    env = {
        **service_env(folder, address, bench.kafka.bootstrap_servers),
        "STUDENTPERF_AUTH_TOKENS": f"bench {TOKEN} *",
    }
    command = [sys.executable, "-m", "inference_service"]
    with process(command, env, folder / "service.log") as child:
        await asyncio.to_thread(wait_serving, address)
        before = resident_mb(child.pid)
        calls = QUICK_CALLS_PER_KIND if bench.quick else CALLS_PER_KIND
        codes, seconds = await flood(address, QUICK_SECONDS if bench.quick else SECONDS, calls)
        if child.returncode is not None:
            raise RuntimeError(f"the service exited ({child.returncode}) during the flood")
        peak = peak_rss_mb(child.pid)
    verdict = "met" if peak < TARGET_RSS_MB else "MISSED"
    rows = [
        Row(
            CASE,
            f"{name} ({len(payload):,} B)",
            sum(count for (kind, _), count in codes.items() if kind == name),
            seconds,
            unit="requests",
            note=", ".join(
                f"{code} {n:,}" for (kind, code), n in sorted(codes.items()) if kind == name
            ),
        )
        for name, payload, _ in kinds()
    ]
    rows.append(
        Row(
            CASE,
            f"service peak RSS over {calls * len(rows)} calls in flight",
            sum(codes.values()),
            seconds,
            unit="requests",
            note=f"{peak:.0f} MiB, target < {TARGET_RSS_MB} MB: {verdict} "
            f"({before:.0f} MiB before)",
        )
    )
    return rows
