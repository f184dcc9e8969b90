#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) into .local/bin, pinned,
# for `make lint` (infra/prometheus/alerts.yml). Called by infra/setup.sh; idempotent: the
# installed version is read back from the binary's build info. A large build (minutes on two
# cores) the first time, a second or so after that; the log is .local/setup-logs/promtool.log.
# SETUP_PROMTOOL=0 skips it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODULE="github.com/prometheus/prometheus"
VERSION="v0.316.0"
BIN_DIR="$ROOT/.local/bin"
BIN="$BIN_DIR/promtool"
LOG="$ROOT/.local/setup-logs/promtool.log"

if [ "${SETUP_PROMTOOL:-1}" = "0" ]; then
    printf '%-9s %s\n' promtool "skipped (SETUP_PROMTOOL=0)"
    exit 0
fi
have=""
if [ -x "$BIN" ] && command -v go >/dev/null 2>&1; then
    have="$(go version -m "$BIN" 2>/dev/null | awk '$1 == "mod" {print $3; exit}')"
fi
if [ "$have" = "$VERSION" ]; then
    printf '%-9s %s\n' promtool "ok: $VERSION in .local/bin"
    exit 0
fi
command -v go >/dev/null || { echo "promtool: go not found" >&2; exit 1; }
started=$(date +%s)
mkdir -p "$BIN_DIR" "$(dirname "$LOG")"
printf '=== %s: go install %s/cmd/promtool@%s\n' "$(date '+%F %T')" "$MODULE" "$VERSION" >>"$LOG"
if ! env GOBIN="$BIN_DIR" CGO_ENABLED=0 go install "$MODULE/cmd/promtool@$VERSION" >>"$LOG" 2>&1; then
    echo "promtool: failed: go install $MODULE/cmd/promtool@$VERSION" >&2
    tail -n 40 "$LOG" >&2
    exit 1
fi
printf '%-9s %s\n' promtool "built $VERSION into .local/bin ($(($(date +%s) - started)) s)"
