# Sourced, not run: defines go_tool, the one install step for the project's pinned Go tools
# (infra/setup.sh: grpcurl, ghz; infra/tools/go_tools.sh: buf; infra/tools/promtool.sh).
#
#   go_tool NAME MODULE VERSION PACKAGE    e.g. go_tool buf github.com/bufbuild/buf v1.75.0 cmd/buf
#
# Builds MODULE/PACKAGE@VERSION into .local/bin/NAME with go install, its output appended to
# .local/setup-logs/NAME.log (the log's tail is shown on failure, and the calling script exits).
# Idempotent: the installed version is read back from the binary's build info, so no stamp is
# needed and a binary that already reports VERSION is left alone.

_GO_TOOL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

go_tool() {
    local name="$1" module="$2" version="$3" pkg="$4"
    local bin_dir="$_GO_TOOL_ROOT/.local/bin" log="$_GO_TOOL_ROOT/.local/setup-logs/$1.log"
    local target="$module/$pkg@$version" have="" started
    if [ -x "$bin_dir/$name" ] && command -v go >/dev/null 2>&1; then
        have="$(go version -m "$bin_dir/$name" 2>/dev/null | awk '$1 == "mod" {print $3; exit}')"
    fi
    if [ "$have" = "$version" ]; then
        printf '%-9s %s\n' "$name" "ok: $version in .local/bin"
        return 0
    fi
    command -v go >/dev/null || { echo "$name: go not found" >&2; exit 1; }
    started=$(date +%s)
    mkdir -p "$bin_dir" "$(dirname "$log")"
    printf '=== %s: go install %s\n' "$(date '+%F %T')" "$target" >>"$log"
    if ! env GOBIN="$bin_dir" CGO_ENABLED=0 go install "$target" >>"$log" 2>&1; then
        echo "$name: failed: go install $target" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    printf '%-9s %s\n' "$name" "built $version into .local/bin ($(($(date +%s) - started)) s)"
}
