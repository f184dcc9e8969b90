"""An open-loop load generator: Predict at a steady rate, each call started on its schedule
whether or not earlier ones have answered (a closed loop would slow down with the server and
hide a backlog). Runs as its own process, so its CPU is not the benchmark's event loop.

    python -m infra.bench.steady_load ADDRESS --rate 1000 --seconds 30

Prints one JSON object: calls started, answered OK (and their prediction ids), failed (by
status), the achieved rate of OK answers over the schedule, and how late the generator itself
started calls (its p99 slip, to tell a slow generator from a slow server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

import grpc

from studentperf.features import CATEGORIES
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1.student_pb2 import (
    AcademicRecord,
    Gender,
    LunchProgram,
    ParentalEducation,
    Student,
    StudentProfile,
    TestPreparation,
)

EDUCATION = tuple(f"PARENTAL_EDUCATION_{name.upper()}" for name in CATEGORIES["parental_education"])


def request(number: int) -> api.PredictRequest:
    """A full student; numbers vary so rows and profiles differ as in production."""
    return api.PredictRequest(
        student=Student(
            profile=StudentProfile(
                student_id=f"steady-{number % 5000}",
                age=14 + number % 6,
                gender=Gender.Value(("GENDER_FEMALE", "GENDER_MALE")[number % 2]),
                parental_education=ParentalEducation.Value(EDUCATION[number % len(EDUCATION)]),
                lunch_program=LunchProgram.Value(
                    ("LUNCH_PROGRAM_STANDARD", "LUNCH_PROGRAM_FREE_OR_REDUCED")[number % 2]
                ),
                test_preparation=TestPreparation.Value(
                    ("TEST_PREPARATION_NONE", "TEST_PREPARATION_COMPLETED")[number % 2]
                ),
            ),
            academic_record=AcademicRecord(
                attendance_percentage=60 + number % 40,
                study_hours_per_week=number % 20,
                previous_gpa=round(1 + (number % 30) / 10, 1),
                assignments_completed=bool(number % 3),
            ),
        )
    )


async def run(address: str, rate: float, seconds: float) -> dict[str, Any]:
    total = int(rate * seconds)
    statuses: Counter[str] = Counter()
    slips: list[float] = []
    answered: list[str] = []  # prediction ids of the OK answers: the rows to wait for
    first_errors: dict[str, str] = {}  # status -> the first failure's details, to say why
    async with grpc.aio.insecure_channel(address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)

        async def call(number: int) -> None:
            try:
                answer = await stub.Predict(request(number), timeout=30)
                statuses["OK"] += 1
                answered.append(answer.prediction.prediction_id)
            except grpc.aio.AioRpcError as error:
                statuses[error.code().name] += 1
                first_errors.setdefault(error.code().name, str(error.details()))

        started_at = time.time()
        started = time.monotonic()
        tasks = []
        for number in range(total):
            due = started + number / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            slips.append(time.monotonic() - due)
            tasks.append(asyncio.create_task(call(number)))
        scheduled_end = time.monotonic()
        await asyncio.gather(*tasks)
    slips.sort()
    return {
        "started": total,
        "ok": statuses["OK"],
        "answered": answered,
        "failed": {k: v for k, v in statuses.items() if k != "OK"},
        "first_errors": first_errors,
        "rate": statuses["OK"] / (scheduled_end - started),
        "seconds": scheduled_end - started,
        "started_at": started_at,  # wall clock, to compare with the rows' timestamps
        "slip_p99_ms": slips[int(0.99 * (len(slips) - 1))] * 1000 if slips else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.address, args.rate, args.seconds))))


if __name__ == "__main__":
    main()
