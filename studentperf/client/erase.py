"""`make erase STUDENT=...`: erase one student through the running service's EraseStudent.

    STUDENTPERF_TOKEN=... python -m studentperf.client.erase s-1001 --reason ticket-4711

The bearer token comes from STUDENTPERF_TOKEN (or the file STUDENTPERF_TOKEN_FILE names), as
the client examples take it; none is sent when neither is set (a server without tokens). Prints
the service's summary and what was removed per table ("removed nothing" for a student with no
data), with `events_skipped`: the student's events that had not been stored yet when the
erasure came and were skipped, never stored ("removed nothing stored; skipped 2 event(s) of the
student not yet recorded" for a student erased just after a prediction and an outcome); or
that the erasure is accepted and not yet confirmed (the recorder will apply it). Exit status:
0 erased or accepted, 1 refused or failed (the status, and each bad field with its rule, are
printed), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from studentperf.client.errors import ServiceError
from studentperf.client.sync import connect
from studentperf.config import ConfigError, env_secret


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m studentperf.client.erase", description=__doc__.split("\n")[0]
    )
    parser.add_argument("student_id")
    parser.add_argument("--reason", default="", help="a reference such as a ticket number")
    parser.add_argument(
        "--target",
        default=os.environ.get("STUDENTPERF_TARGET", "127.0.0.1:50051"),
        help="host:port of the service (default: STUDENTPERF_TARGET, else 127.0.0.1:50051)",
    )
    parser.add_argument("--tls", action="store_true", help="TLS (implied by --ca)")
    parser.add_argument("--ca", type=Path, help="PEM CA to verify the server (default: system)")
    parser.add_argument("--cert", type=Path, help="client certificate, for mutual TLS")
    parser.add_argument("--key", type=Path, help="the client certificate's key")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    args = parser.parse_args(argv)
    try:
        token = env_secret(os.environ, "TOKEN") or None
    except ConfigError as error:
        parser.error(str(error))
    try:
        client = connect(
            args.target,
            tls=args.tls or args.ca is not None,
            root_certificates=args.ca,
            client_certificate=args.cert,
            client_key=args.key,
            token=token,
            default_deadline_s=args.timeout,
        )
    except (ValueError, OSError) as error:  # options the client refuses, a PEM file unread
        parser.error(str(error))
    with client:
        try:
            answer = client.erase_student(args.student_id, reason=args.reason)
        except ServiceError as error:
            print(f"erase {args.student_id}: refused: {error}", file=sys.stderr)
            return 1
    print(f"erasure {answer.erasure_id}: {answer.summary}")
    for table, count in sorted(answer.removed.items()):
        print(f"  {table}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
