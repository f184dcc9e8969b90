#!/usr/bin/env bash
# Installs the pinned Go tools of the contract's checks into .local/bin, from the Go module
# proxy (go install; nothing from the schema registry):
#   buf       `make lint`'s buf lint and buf breaking (proto/buf.sh)
# Called by infra/setup.sh; run alone it does the same. Idempotent: a tool whose binary already
# reports the pinned version (read back from its build info, so no stamp) is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
GOBIN_DIR="$ROOT/.local/bin"
LOGS="$ROOT/.local/setup-logs"

# Pinned versions (keep in one place).
BUF_MODULE="github.com/bufbuild/buf"
BUF_VERSION="v1.75.0"

say() { printf '%-9s %s\n' "$1" "$2"; }

install_go_tool() {
    local name="$1" module="$2" version="$3" pkg="$4" bin="$GOBIN_DIR/$1" have="" t0 log
    if [ -x "$bin" ] && command -v go >/dev/null 2>&1; then
        have="$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" {print $3; exit}')"
    fi
    if [ "$have" = "$version" ]; then
        say "$name" "ok: $version in .local/bin"
        return 0
    fi
    command -v go >/dev/null || { echo "$name: go not found" >&2; exit 1; }
    t0=$(date +%s)
    log="$LOGS/$name.log"
    mkdir -p "$GOBIN_DIR" "$LOGS"
    printf '=== %s: go install %s\n' "$(date '+%F %T')" "$module/$pkg@$version" >>"$log"
    if ! env GOBIN="$GOBIN_DIR" CGO_ENABLED=0 go install "$module/$pkg@$version" >>"$log" 2>&1; then
        echo "$name: failed: go install $module/$pkg@$version" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    say "$name" "built $version into .local/bin ($(($(date +%s) - t0)) s)"
}

install_go_tool buf "$BUF_MODULE" "$BUF_VERSION" cmd/buf
