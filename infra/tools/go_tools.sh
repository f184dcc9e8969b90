#!/usr/bin/env bash
# Installs the pinned Go tools of the contract's checks into .local/bin, from the Go module
# proxy (go install; nothing from the schema registry):
#   buf       `make lint`'s buf lint and buf breaking (proto/buf.sh)
# Called by infra/setup.sh; run alone it does the same. Idempotent: a tool whose binary already
# reports the pinned version (read back from its build info, so no stamp) is left alone.
set -euo pipefail

# shellcheck source=go_tool.sh
source "$(dirname "${BASH_SOURCE[0]}")/go_tool.sh"

# Pinned versions (keep in one place).
BUF_MODULE="github.com/bufbuild/buf"
BUF_VERSION="v1.75.0"

go_tool buf "$BUF_MODULE" "$BUF_VERSION" cmd/buf
