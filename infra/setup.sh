#!/usr/bin/env bash
# Installs everything the project needs to run its real services and tools, from a clean clone:
#   postgres  the Debian PostgreSQL package (the only system-wide change; its own cluster is
#             left stopped: the project runs private clusters, see infra/devstack/)
#   venv      .venv with requirements/dev.lock (hash-checked) and the project, editable
#   kafka     the Kafka broker jars (infra/kafka/pom.xml) in .local/kafka/libs
#   grpcurl   pinned Go tools in .local/bin (ghz is skipped with SETUP_GHZ=0)
#   ghz
#   chromium  the Debian chromium and chromium-driver packages: the monitoring report's test
#             renders it headless (SETUP_CHROMIUM=0 skips them)
# Idempotent: each step is skipped when already done, so a second run takes a second or two.
#
# Environment: PYTHON (default python3.11, else python3), SETUP_GHZ=0 to skip ghz,
# SETUP_POSTGRES=0 to skip the PostgreSQL package check, SETUP_CHROMIUM=0 to skip Chromium.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOCAL="$ROOT/.local"
KAFKA_LIBS="$LOCAL/kafka/libs"
KAFKA_POM="$ROOT/infra/kafka/pom.xml"
VENV="$ROOT/.venv"

# Pinned tool versions (keep in one place).
GRPCURL_MODULE="github.com/fullstorydev/grpcurl"
GRPCURL_VERSION="v1.9.4"
GHZ_MODULE="github.com/bojand/ghz"
GHZ_VERSION="v0.120.0"

mkdir -p "$LOCAL"

_t0=0
start_step() { _t0=$(date +%s); }
say() { printf '%-9s %s\n' "$1" "$2"; }
done_step() { say "$1" "$2 ($(($(date +%s) - _t0)) s)"; }

# Run a command with its output appended to .local/setup-logs/<name>.log; show the log's tail on failure.
quietly() {
    local name="$1" log="$LOCAL/setup-logs/$1.log"
    shift
    mkdir -p "$LOCAL/setup-logs"
    printf '=== %s: %s\n' "$(date '+%F %T')" "$*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        echo "$name: failed: $*" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- 1. PostgreSQL server programs ---------------------------------------------------------------
pg_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1 && d="$(pg_config --bindir 2>/dev/null)" &&
        [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
        echo "$d"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

# The package creates (and on systems with a service manager starts) a "main" cluster on 5432.
# We never use it: stop any cluster the install started and keep it from starting at boot.
stop_system_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    local ver name port status
    while read -r ver name port status _; do
        [ -n "${ver:-}" ] || continue
        as_root sed -i 's/^auto$/manual/' "/etc/postgresql/$ver/$name/start.conf" 2>/dev/null || true
        if [ "$status" = "online" ]; then
            as_root pg_ctlcluster "$ver" "$name" stop || true
        fi
    done < <(pg_lsclusters -h 2>/dev/null)
}

if [ "${SETUP_POSTGRES:-1}" = "0" ]; then
    say postgres "skipped (SETUP_POSTGRES=0)"
elif bindir="$(pg_bindir)"; then
    say postgres "ok: $("$bindir/postgres" --version) in $bindir"
    # Not our cluster to manage once installed; just say when one holds a port.
    if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q ' online '; then
        say postgres "note: a system cluster is running: $(pg_lsclusters -h | awk '$4=="online"{printf "%s/%s:%s ", $1, $2, $3}')"
    fi
else
    start_step
    export DEBIAN_FRONTEND=noninteractive
    quietly postgres as_root apt-get update
    quietly postgres as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends postgresql
    stop_system_clusters
    bindir="$(pg_bindir)" || { echo "postgres: initdb still not found after install" >&2; exit 1; }
    done_step postgres "installed $("$bindir/postgres" --version) (system cluster left stopped)"
fi

# --- 2. Python virtual environment ---------------------------------------------------------------
# Exactly the versions in requirements/dev.lock, each checked against its hash (`make lock`
# regenerates the lock from pyproject.toml); then the project itself, editable and --no-deps.
PY_LOCK="$ROOT/requirements/dev.lock"
PY_STAMP="$VENV/.installed"
if [ -f "$PY_STAMP" ] && [ "$PY_STAMP" -nt "$ROOT/pyproject.toml" ] && [ "$PY_STAMP" -nt "$PY_LOCK" ] &&
    [ -x "$VENV/bin/python" ]; then
    say venv "ok: $("$VENV/bin/python" --version) in .venv"
else
    start_step
    # The longest step (minutes on a slow link or machine), quiet otherwise: say it started.
    say venv "installing requirements/dev.lock into .venv (log: .local/setup-logs/venv.log)"
    PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    quietly venv "$VENV/bin/python" -m pip install --disable-pip-version-check \
        --require-hashes -r "$PY_LOCK"
    quietly venv "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps -e .
    touch "$PY_STAMP"
    done_step venv "installed requirements/dev.lock and the project into .venv"
fi

# --- 3. Kafka broker jars ------------------------------------------------------------------------
KAFKA_STAMP="$KAFKA_LIBS/.installed"
if [ -f "$KAFKA_STAMP" ] && [ "$KAFKA_STAMP" -nt "$KAFKA_POM" ]; then
    say kafka "ok: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars ($(basename "$(ls "$KAFKA_LIBS"/kafka_2.13-*.jar)" .jar)) in .local/kafka/libs"
else
    start_step
    command -v java >/dev/null || { echo "kafka: java (17+) not found" >&2; exit 1; }
    command -v mvn >/dev/null || { echo "kafka: mvn not found" >&2; exit 1; }
    rm -rf "$KAFKA_LIBS"
    quietly kafka mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
    ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null
    touch "$KAFKA_STAMP"
    done_step kafka "$(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in .local/kafka/libs"
fi

# --- 4. Go tools ---------------------------------------------------------------------------------
# One install step for every pinned Go tool (infra/tools/go_tool.sh): idempotent, it reads the
# installed version back from the binary's build info, so no stamp is needed.
# shellcheck source=tools/go_tool.sh
source "$ROOT/infra/tools/go_tool.sh"

go_tool grpcurl "$GRPCURL_MODULE" "$GRPCURL_VERSION" cmd/grpcurl
if [ "${SETUP_GHZ:-1}" = "0" ]; then
    say ghz "skipped (SETUP_GHZ=0)"
else
    go_tool ghz "$GHZ_MODULE" "$GHZ_VERSION" cmd/ghz
fi
bash "$ROOT/infra/tools/go_tools.sh"  # buf, for make lint
bash "$ROOT/infra/tools/promtool.sh"  # promtool for `make lint`'s alert rule checks

# --- 5. Headless Chromium ------------------------------------------------------------------------
# The Debian driver matches the Debian browser, so Selenium never has to download either.
if [ "${SETUP_CHROMIUM:-1}" = "0" ]; then
    say chromium "skipped (SETUP_CHROMIUM=0)"
elif [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say chromium "ok: $(/usr/bin/chromedriver --version | awk '{print $1, $2}') in /usr/bin"
else
    start_step
    quietly chromium as_root apt-get update
    quietly chromium as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends chromium chromium-driver
    [ -x /usr/bin/chromedriver ] || { echo "chromium: /usr/bin/chromedriver still missing" >&2; exit 1; }
    done_step chromium "installed $(/usr/bin/chromedriver --version | awk '{print $1, $2}')"
fi
