"""Predict one student's final score and print the answer as JSON.

    python docs/examples/predict_one.py --student-id s-1001 --age 16 --gender female \
        --previous-gpa 3.1 --attendance 92 --top-factors 3

Exit status 1 when the service refuses the call; the bad fields are printed one a line.
"""

from __future__ import annotations

import argparse
import sys

from google.protobuf.json_format import MessageToJson

from studentperf.client import ServiceError, StudentInput, connect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--student-id", required=True)
    parser.add_argument("--age", type=int)
    parser.add_argument("--gender", help="female, male or other")
    parser.add_argument("--previous-gpa", type=float)
    parser.add_argument("--attendance", type=float, help="attendance percentage, 0-100")
    parser.add_argument("--top-factors", type=int, default=0, help="explain the N biggest inputs")
    parser.add_argument("--deadline", type=float, default=10.0, help="seconds, retries included")
    args = parser.parse_args()

    student = StudentInput(
        args.student_id,
        age=args.age,
        gender=args.gender,
        previous_gpa=args.previous_gpa,
        attendance_percentage=args.attendance,
    )
    with connect(args.target, default_deadline_s=args.deadline) as client:
        try:
            answer = client.predict(student, top_factors=args.top_factors)
        except ServiceError as error:
            print(f"refused: {error.code.name}: {error.message}", file=sys.stderr)
            for violation in error.field_violations:
                print(f"  {violation.field}: {violation.description}", file=sys.stderr)
            return 1
    print(MessageToJson(answer.prediction, preserving_proto_field_name=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
