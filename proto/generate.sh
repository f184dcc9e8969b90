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
# Typed stubs come from mypy-protobuf (a dev dependency, installed beside $py): .pyi for the
# messages and for the services' stubs and servicers, so grpc calls type-check without ignores.
bindir=$(dirname "$("$py" -c 'import sys; print(sys.executable)')")
"$py" -m grpc_tools.protoc -I"$here" -I"$rpc_include" \
  --plugin=protoc-gen-mypy="$bindir/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bindir/protoc-gen-mypy_grpc" \
  --python_out="$out" --mypy_out=quiet:"$out" --grpc_python_out="$out" --mypy_grpc_out=quiet:"$out" \
  "$here"/studentperf/v1/*.proto
touch "$out/studentperf/v1/__init__.py"
