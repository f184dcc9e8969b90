"""Predict every student of a CSV file, any number of rows, and write the answers as CSV.

    python docs/examples/batch_csv.py docs/examples/students.csv --out predictions.csv

Columns are the fields of StudentInput (student_id, age, gender, parental_education,
lunch_program, test_preparation, attendance_percentage, study_hours_per_week, previous_gpa,
assignments_completed); any may be missing or empty except student_id. The client splits the
rows over the server's limits and sends a few calls at a time (asyncio). Each output row names
its input line and holds the prediction or why that student got none; if a call fails, the
answers that came are still written (they are recorded predictions) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from pathlib import Path

from studentperf.client import PartlyAnswered, StudentInput
from studentperf.client.aio import connect
from studentperf.v1.prediction_service_pb2 import BatchPredictResult

OUTPUT_COLUMNS = [
    "line", "student_id", "predicted_final_score", "pass_probability", "predicted_pass",
    "model_version", "prediction_id", "error",
]  # fmt: skip


def read_students(path: Path) -> tuple[list[tuple[int, StudentInput]], list[dict[str, object]]]:
    """The rows that make a student, by line number; and an output row for each that does not."""
    students: list[tuple[int, StudentInput]] = []
    unreadable: list[dict[str, object]] = []
    with path.open(newline="") as file:
        for line, row in enumerate(csv.DictReader(file), start=2):
            try:
                students.append((line, StudentInput.from_row(row)))
            except ValueError as error:
                unreadable.append({"line": line, "student_id": row.get("student_id"),
                                   "error": str(error)})  # fmt: skip
    return students, unreadable


async def run(args: argparse.Namespace) -> int:
    students, rows = read_students(args.csv)
    async with connect(args.target, default_deadline_s=args.deadline) as client:
        status = 0
        results: list[BatchPredictResult | None]
        try:
            results = list(
                await client.predict_many(
                    [student for _, student in students],
                    batch_size=args.batch_size,
                    concurrency=args.concurrency,
                )
            )
        except PartlyAnswered as error:
            # The answers that came are recorded predictions: written, not thrown away.
            print(f"stopped: {error}; {error.answered} answers written", file=sys.stderr)
            results, status = error.results, 1
    for (line, student), result in zip(students, results, strict=True):
        row: dict[str, object] = {"line": line, "student_id": student.student_id}
        if result is None:
            row["error"] = "not answered: the run stopped (see its error)"
        elif result.HasField("prediction"):
            p = result.prediction
            row.update(predicted_final_score=round(p.predicted_final_score, 2),
                       pass_probability=round(p.pass_probability, 4),
                       predicted_pass=p.predicted_pass, model_version=p.model_version,
                       prediction_id=p.prediction_id)  # fmt: skip
        else:
            row["error"] = "; ".join(
                f"{v.field}: {v.description}" for v in result.error.bad_request.field_violations
            )
        rows.append(row)
    rows.sort(key=lambda r: int(str(r["line"])))
    with args.out.open("w", newline="") as file:
        writer = csv.DictWriter(file, OUTPUT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(1 for r in rows if r.get("error"))
    print(f"{len(rows)} rows: {len(rows) - failed} predicted, {failed} refused -> {args.out}")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"))
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--batch-size", type=int, help="students per call (default: the limit)")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight at once")
    parser.add_argument("--deadline", type=float, default=30.0, help="seconds per call")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
