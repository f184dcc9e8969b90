#!/usr/bin/env bash
# Regenerates the hash-locked requirements from pyproject.toml (`make lock`):
#   image.lock  the server, recorder and trainer extras: what infra/docker/Dockerfile installs
#   dev.lock    the dev extra (every role plus test and lint tools): .venv and CI (infra/setup.sh)
# dev.lock is resolved within image.lock, so the two agree on every package they share. Both are
# universal (every platform's wheels hashed), for Python 3.11 (pyproject's requires-python).
# The project itself is not in them: it is installed from the checkout, --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
compile() {
    "$uv" pip compile pyproject.toml --quiet --universal --generate-hashes \
        --constraint requirements/constraints.txt --custom-compile-command "make lock" "$@"
}
compile --extra server --extra recorder --extra trainer -o requirements/image.lock
compile --extra dev --constraint requirements/image.lock -o requirements/dev.lock
