"""The serving benchmark's cases and its load generator, ghz (`.local/bin/ghz`, built by
infra/setup.sh): what each case asks of which server, and one timed run of it."""

from __future__ import annotations

import json
import resource
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.rpc import code_pb2

from infra.bench.mlserver_peer import BATCHED, MODEL_INFER, UNBATCHED, MLServerPeer
from infra.devstack import local_dir, repo_root
from studentperf.v1 import prediction_service_pb2 as api

PREDICT = "studentperf.v1.PredictionService/Predict"
BATCH_PREDICT = "studentperf.v1.PredictionService/BatchPredict"
_CUT_OFF = "use of closed network connection"

# The servers (MLServer's two are its model names, mlserver_peer.UNBATCHED and BATCHED). The
# trivial server and the service run on uvloop, the service's default loop; at concurrency 64
# both also run on asyncio's own loop, to show what uvloop buys each (inference_service.event_loop).
TRIVIAL = "trivial"
SERVICE = "service"
SERVICE_2 = "service-2w"  # the service with STUDENTPERF_WORKERS=2
TRIVIAL_ASYNCIO = "trivial-asyncio"
SERVICE_ASYNCIO = "service-asyncio"
WORKERS = {SERVICE: 1, SERVICE_2: 2, SERVICE_ASYNCIO: 1}
UVLOOP, ASYNCIO = "uvloop", "asyncio"
EVENT_LOOP = {TRIVIAL_ASYNCIO: ASYNCIO, SERVICE_ASYNCIO: ASYNCIO}  # the rest: uvloop
# The concurrency at which the loops are compared (issue 17's CPU-per-call target's).
LOOP_CONCURRENCY = 64
# SO_REUSEPORT spreads connections, not calls, over the workers: ghz opens several so that
# each worker gets some (8 land all on one of 2 workers once in 128 runs).
MULTI_WORKER_CONNECTIONS = 8


@dataclass(frozen=True)
class Case:
    server: str
    call: str
    concurrency: int
    students: int = 1  # per call

    @property
    def label(self) -> str:
        if self.call == BATCH_PREDICT:
            return f"{self.server} BatchPredict x{self.students}"
        if self.server == UNBATCHED:
            return "MLServer ModelInfer, batching off"
        if self.server == BATCHED:
            return "MLServer ModelInfer, adaptive batching"
        if self.server == SERVICE_2:
            return "service Predict, STUDENTPERF_WORKERS=2"
        if self.server in EVENT_LOOP:
            return f"{self.server.split('-')[0]} Predict, {EVENT_LOOP[self.server]} loop"
        return f"{self.server} Predict"

    @property
    def connections(self) -> int:
        if WORKERS.get(self.server, 1) > 1:
            return min(self.concurrency, MULTI_WORKER_CONNECTIONS)
        return 1

    @property
    def compared(self) -> tuple[str, int]:
        """The cases measured against each other, so run in turn: same call, same concurrency."""
        return (BATCH_PREDICT if self.call == BATCH_PREDICT else PREDICT, self.concurrency)


@dataclass(frozen=True)
class Result:
    """One run of one case."""

    case: Case
    calls_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ok: int
    errors: int
    # The server's own CPU time (its process and children) over the run, per OK call: unlike
    # calls/s, hardly moved by other work on the machine.
    cpu_ms_per_call: float = float("nan")
    round: int = 0  # which repeat
    # CPU time over wall time during the run, in cores (of os.cpu_count()): ghz's, the Kafka
    # broker's, and the server's.
    driver_cores: float = float("nan")
    broker_cores: float = float("nan")
    server_cores: float = float("nan")
    processes: int = 1  # the server's process tree at the end of the run

    @property
    def students_per_s(self) -> float:
        return self.calls_per_s * self.case.students


def cases(with_mlserver: bool) -> list[Case]:
    servers = (TRIVIAL, SERVICE, SERVICE_2, *((UNBATCHED, BATCHED) if with_mlserver else ()))
    predict = [
        Case(server, MODEL_INFER if server in (UNBATCHED, BATCHED) else PREDICT, concurrency)
        for concurrency in (1, 16, 64)
        for server in (*servers, *(EVENT_LOOP if concurrency == LOOP_CONCURRENCY else ()))
    ]
    batches = [Case(SERVICE, BATCH_PREDICT, 8, 100), Case(SERVICE, BATCH_PREDICT, 4, 1000)]
    return predict + batches


def student(number: int | str) -> dict[str, Any]:
    """A full, valid student as ghz's JSON data (numbers vary so the model does some work)."""
    index = number if isinstance(number, int) else 7
    return {
        "profile": {
            "student_id": f"bench-{number}",
            "age": 14 + index % 6,
            "gender": "GENDER_FEMALE" if index % 2 else "GENDER_MALE",
            "parental_education": "PARENTAL_EDUCATION_BACHELOR",
            "lunch_program": "LUNCH_PROGRAM_STANDARD",
            "test_preparation": "TEST_PREPARATION_COMPLETED"
            if index % 2
            else "TEST_PREPARATION_NONE",
        },
        "academic_record": {
            "attendance_percentage": 60 + index % 40,
            "study_hours_per_week": index % 20,
            "previous_gpa": round(1 + (index % 30) / 10, 1),
            "assignments_completed": bool(index % 3),
        },
    }


def request_data(case: Case) -> dict[str, Any]:
    if case.call == PREDICT:
        return {"student": student("{{.RequestNumber}}")}  # ghz fills in a number per call
    return {"students": [student(i) for i in range(case.students)]}


def data_option(case: Case, folder: Path) -> str:
    """Predict: JSON, so ghz numbers each call's student. Batches: the serialized message, so
    ghz does not turn 1,000 students of JSON into protobuf on every call, on our CPUs."""
    if case.call == PREDICT:
        data = folder / "predict.json"
        data.write_text(json.dumps(request_data(case)))
        return f"--data-file={data}"
    message = json_format.ParseDict(request_data(case), api.BatchPredictRequest())
    data = folder / f"batch-{case.students}.bin"
    data.write_bytes(message.SerializeToString())
    return f"--binary-file={data}"


def schema_options(case: Case, folder: Path, peer: MLServerPeer | None) -> list[str]:
    if case.call == MODEL_INFER:
        assert peer is not None
        # One fixed student per call: the V2 request carries it as tensors, not JSON ghz could
        # number; the model's work per row does not depend on the values.
        return [f"--protoset={peer.protoset}", f"--binary-file={peer.requests[case.server]}"]
    return [
        # The proto, not reflection: ghz's reflection client cannot resolve this service.
        f"--proto={repo_root() / 'proto' / 'studentperf' / 'v1' / 'prediction_service.proto'}",
        f"--import-paths={repo_root() / 'proto'},{Path(code_pb2.__file__).parents[2]}",
        data_option(case, folder),
    ]


def children_cpu_seconds() -> float:
    """User and system CPU time of this process's children that have ended and been waited
    for: around one ghz run, that run's."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run_ghz(
    address: str, case: Case, seconds: float, folder: Path, peer: MLServerPeer | None = None
) -> tuple[Result, float]:
    """One run, and ghz's own CPU seconds over it."""
    command = [
        str(local_dir() / "bin" / "ghz"),
        "--insecure",
        *schema_options(case, folder, peer),
        f"--call={case.call}",
        f"--concurrency={case.concurrency}",
        f"--connections={case.connections}",
        f"--duration={seconds}s",
        "--timeout=20s",
        "--format=json",
        address,
    ]
    cpu_before = children_cpu_seconds()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    driver_cpu_s = children_cpu_seconds() - cpu_before
    if not done.stdout.strip():
        raise RuntimeError(f"ghz failed for {case.label}: {done.stderr.strip()}")
    return parse_report(case, json.loads(done.stdout)), driver_cpu_s


def parse_report(case: Case, report: Mapping[str, Any]) -> Result:
    latencies = {
        int(item["percentage"]): item["latency"] / 1e6
        for item in report.get("latencyDistribution") or []
    }
    statuses: Mapping[str, int] = report.get("statusCodeDistribution") or {}
    ok = int(statuses.get("OK", 0))
    # When the duration ends ghz closes its connection under the calls still in flight; those
    # are the load generator's doing, not errors of the server.
    errors: Mapping[str, int] = report.get("errorDistribution") or {}
    failed = sum(n for message, n in errors.items() if _CUT_OFF not in message)
    return Result(
        case=case,
        calls_per_s=ok / (report["total"] / 1e9),
        p50_ms=latencies.get(50, float("nan")),
        p95_ms=latencies.get(95, float("nan")),
        p99_ms=latencies.get(99, float("nan")),
        ok=ok,
        errors=failed,
    )
