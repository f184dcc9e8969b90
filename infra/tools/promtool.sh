#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) into .local/bin, pinned,
# for `make lint` (infra/prometheus/alerts.yml). Called by infra/setup.sh; idempotent: the
# installed version is read back from the binary's build info. A large build (minutes on two
# cores) the first time, a second or so after that; the log is .local/setup-logs/promtool.log.
# SETUP_PROMTOOL=0 skips it.
set -euo pipefail

# shellcheck source=go_tool.sh
source "$(dirname "${BASH_SOURCE[0]}")/go_tool.sh"

MODULE="github.com/prometheus/prometheus"
VERSION="v0.316.0"

if [ "${SETUP_PROMTOOL:-1}" = "0" ]; then
    printf '%-9s %s\n' promtool "skipped (SETUP_PROMTOOL=0)"
    exit 0
fi
go_tool promtool "$MODULE" "$VERSION" cmd/promtool
