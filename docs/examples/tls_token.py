"""Call a service that requires TLS (optionally a client certificate) and a bearer token.

    STUDENTPERF_TOKEN=... python docs/examples/tls_token.py --target api.school.example:50051 \
        --ca ca.pem [--cert client.pem --key client.key]

The token comes from the environment (or --token-file), never the command line, where every
user of the machine could read it. Prints the served model, then one prediction.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from studentperf.client import ServiceError, StudentInput, connect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--ca", type=Path, help="PEM CA to verify the server (default: system)")
    parser.add_argument("--cert", type=Path, help="client certificate, for mutual TLS")
    parser.add_argument("--key", type=Path, help="the client certificate's key")
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token")
    args = parser.parse_args()
    token = (
        args.token_file.read_text().strip()
        if args.token_file
        else os.environ.get("STUDENTPERF_TOKEN")
    )
    if not token:
        parser.error("set STUDENTPERF_TOKEN or pass --token-file")

    client = connect(
        args.target,
        tls=True,
        root_certificates=args.ca,
        client_certificate=args.cert,
        client_key=args.key,
        token=token,
    )
    with client:
        try:
            info = client.model_info()
            print(f"model {info.model_version}, score RMSE {info.metrics['score_rmse']:.2f}")
            answer = client.predict(StudentInput("tls-example-1", age=16, previous_gpa=3.0))
        except ServiceError as error:
            print(f"refused: {error}", file=sys.stderr)
            return 1
    p = answer.prediction
    print(f"prediction {p.prediction_id}: score {p.predicted_final_score:.1f}, "
          f"pass probability {p.pass_probability:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
