#!/usr/bin/env bash
# Generates the Python code for proto/studentperf/v1/*.proto into OUT_DIR (default: the repo
# root, giving the package studentperf.v1). The proto path matches the Python import path, so
# the generated imports (`from studentperf.v1 import student_pb2`) work without rewriting.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$(dirname "$here")}
py=${PYTHON:-python}
# google/rpc/*.proto ship inside googleapis-common-protos (a grpcio-status dependency).
rpc_include=$("$py" -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))')
mkdir -p "$out/studentperf/v1"
"$py" -m grpc_tools.protoc -I"$here" -I"$rpc_include" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$here"/studentperf/v1/*.proto
touch "$out/studentperf/v1/__init__.py"
