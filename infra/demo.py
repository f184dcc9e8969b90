"""`make demo`: a few predictions and a batch against the running stack, then their rows.

Run it while `make up` runs (in another terminal). It talks to the service at
STUDENTPERF_LISTEN_ADDRESS and reads the rows from STUDENTPERF_DATABASE_URL, as the
services themselves do.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg
import grpc

from inference_service.settings import Settings
from studentperf.config import DatabaseRole, SharedSettings
from studentperf.persistence import demo
from studentperf.v1 import prediction_service_pb2 as api
from studentperf.v1 import prediction_service_pb2_grpc as api_grpc
from studentperf.v1 import student_pb2 as pb

STUDENTS = [
    pb.Student(
        profile=pb.StudentProfile(
            student_id="demo-ada",
            age=16,
            gender=pb.GENDER_FEMALE,
            parental_education=pb.PARENTAL_EDUCATION_MASTER,
            test_preparation=pb.TEST_PREPARATION_COMPLETED,
        ),
        academic_record=pb.AcademicRecord(
            attendance_percentage=97,
            study_hours_per_week=14,
            previous_gpa=3.8,
            assignments_completed=True,
        ),
    ),
    pb.Student(
        profile=pb.StudentProfile(student_id="demo-bo", age=17, gender=pb.GENDER_MALE),
        academic_record=pb.AcademicRecord(
            attendance_percentage=61, study_hours_per_week=2, previous_gpa=1.9
        ),
    ),
    # Nothing but the id: every feature is imputed.
    pb.Student(profile=pb.StudentProfile(student_id="demo-cy")),
]


def show(prediction: api.Prediction, who: str) -> None:
    verdict = "pass" if prediction.predicted_pass else "fail"
    print(
        f"  {who:<10} score {prediction.predicted_final_score:5.1f}  "
        f"P(pass) {prediction.pass_probability:.2f} -> {verdict}  "
        f"imputed {len(prediction.imputed_fields)}  id {prediction.prediction_id}"
    )


async def main() -> int:
    settings = Settings.from_env(os.environ)
    ids: list[uuid.UUID] = []
    async with grpc.aio.insecure_channel(settings.listen_address) as channel:
        stub = api_grpc.PredictionServiceStub(channel)
        try:
            info = await stub.GetModelInfo(api.GetModelInfoRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            print(
                f"cannot reach {settings.listen_address}: {error.details()}; is `make up` running?",
                file=sys.stderr,
            )
            return 1
        print(
            f"model {info.model_version}: held-out R² {info.metrics.get('score_r2', 0):.2f}, "
            f"ROC-AUC {info.metrics.get('pass_roc_auc', 0):.2f}"
        )

        print("Predict, one student at a time:")
        for student in STUDENTS:
            answer = await stub.Predict(api.PredictRequest(student=student), timeout=10)
            show(answer.prediction, student.profile.student_id)
            ids.append(uuid.UUID(answer.prediction.prediction_id))

        batch = [
            pb.Student(
                profile=pb.StudentProfile(student_id=f"demo-batch-{i:02d}", age=15 + i % 4),
                academic_record=pb.AcademicRecord(
                    attendance_percentage=60 + 2 * i, previous_gpa=round(1.5 + i * 0.12, 2)
                ),
            )
            for i in range(20)
        ]
        batch[7].profile.age = 5  # refused on its own; the other 19 are still predicted
        print("BatchPredict, 20 students, one of them invalid:")
        response = await stub.BatchPredict(api.BatchPredictRequest(students=batch), timeout=30)
        for index, result in enumerate(response.results):
            if result.WhichOneof("result") == "error":
                print(f"  #{index:<2} refused: {result.error.message}")
            else:
                ids.append(uuid.UUID(result.prediction.prediction_id))
        print(f"  {len(ids) - len(STUDENTS)} predicted")

    print(f"rows recorded in PostgreSQL ({len(ids)} expected):")
    # Reading is all the demo does with the database: as the read-only role.
    conn = await asyncpg.connect(
        SharedSettings.from_env(os.environ, DatabaseRole.ANALYST).database_url
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            rows = await conn.fetch(demo.PREDICTIONS_SHOWN, ids)
            if len(rows) == len(ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    columns = [
        "student_id",
        "age",
        "attendance_percentage",
        "previous_gpa",
        "score",
        "p_pass",
        "predicted_pass",
        "imputed",
        "lag",
    ]
    print("  " + "  ".join(f"{c:>12}" for c in columns))
    for row in rows[:8]:
        print("  " + "  ".join(f"{_cell(row[c]):>12}" for c in columns))
    if len(rows) > 8:
        print(f"  ... and {len(rows) - 8} more")
    print(f"{len(rows)} of {len(ids)} predictions recorded")
    return 0 if len(rows) == len(ids) else 1


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if hasattr(value, "total_seconds"):
        return f"{value.total_seconds() * 1000:.0f} ms"
    return str(value)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
