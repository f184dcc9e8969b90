#!/usr/bin/env bash
# buf lint and buf breaking on the contract, offline (see proto/buf.yaml):
#   proto/buf.sh            lint, and check for breaking changes against the baseline
#   proto/buf.sh baseline   make proto/breaking-baseline.json from the contract as it is now
#                           (at a release's commit only; see proto/buf.yaml)
# The contract is compiled by protoc (grpc_tools, as proto/generate.sh does) into an image
# with its comments; buf reads that image, so it needs neither the network nor the registry.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
py=${PYTHON:-python}
buf=${BUF:-$root/.local/bin/buf}
[ -x "$buf" ] || { echo "buf not found at $buf: run make setup" >&2; exit 1; }
# Nothing in the user's ~/.cache: buf's cache lives with the project's other tools.
export BUF_CACHE_DIR="$root/.local/buf-cache"
baseline="$here/breaking-baseline.json"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# google/rpc/*.proto ship inside googleapis-common-protos (a grpcio-status dependency).
rpc_include=$("$py" -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))')
"$py" -m grpc_tools.protoc -I"$here" -I"$rpc_include" --include_imports --include_source_info \
  --descriptor_set_out="$tmp/contract.binpb" "$here"/studentperf/v1/*.proto

# Only our files are checked; the imported google/* files are there to resolve types.
only=(--path studentperf --config "$here/buf.yaml")
if [ "${1:-}" = "baseline" ]; then
  "$buf" build "$tmp/contract.binpb" --exclude-source-info --path studentperf -o "$tmp/baseline.json"
  # Indented, so that a release's diff of it reads as what changed in the contract.
  "$py" -m json.tool --indent 1 "$tmp/baseline.json" >"$baseline"
  echo "wrote ${baseline#"$root"/}: commit it with the release"
  exit 0
fi
"$buf" lint "$tmp/contract.binpb" "${only[@]}"
"$buf" breaking "$tmp/contract.binpb" --against "$baseline" "${only[@]}"
