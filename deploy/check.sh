#!/usr/bin/env bash
# Renders every kustomization under deploy/ and validates what it renders against the
# Kubernetes API schemas, offline (`make k8s-check`; `make test` runs it first).
#   kustomize            built from the Go module proxy into .local/bin (pinned; skipped when
#                        the binary there already is that version)
#   kubernetes-validate  from PyPI into .local/k8s-venv; it carries the schemas of every
#                        Kubernetes version in the package, so nothing is fetched at check time
#                        (kubeconform would fetch them from GitHub on each run)
# Rendered manifests go to .local/k8s/<name>.yaml.
# Usage: deploy/check.sh [--tools-only | --validate FILE...]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# v5.8 needs Go 1.27; this machine's Go is 1.26.
KUSTOMIZE_VERSION="v5.7.1"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# The oldest Kubernetes the manifests are for (StatefulSet PVC retention is GA from 1.32), and
# the newest the validator knows.
KUBERNETES_VERSIONS=(1.33.0 1.37.0)
# Custom resources of the operators the strimzi-cnpg overlay uses: no schema in Kubernetes';
# tests/unit/test_k8s_manifests.py checks what the services rely on in them.
OPERATOR_GROUPS="kafka.strimzi.io postgresql.cnpg.io"

BIN="$ROOT/.local/bin"
VENV="$ROOT/.local/k8s-venv"
OUT="$ROOT/.local/k8s"
mkdir -p "$BIN" "$OUT"

have="$(go version -m "$BIN/kustomize" 2>/dev/null | awk '$1 == "mod" {print $3; exit}' || true)"
if [ "$have" != "$KUSTOMIZE_VERSION" ]; then
    echo "k8s-check: building kustomize $KUSTOMIZE_VERSION into .local/bin"
    GOBIN="$BIN" CGO_ENABLED=0 go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
    echo "k8s-check: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .local/k8s-venv"
    PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
rendered=()
case "${1:-}" in
--tools-only) exit 0 ;;
--validate)
    shift
    rendered=("$@")
    ;;
*)
    for dir in deploy/base deploy/overlays/*/; do
        dir="${dir%/}"
        name="$(basename "$dir")"
        "$BIN/kustomize" build "$dir" >"$OUT/$name.yaml"
        rendered+=("$OUT/$name.yaml")
    done
    ;;
esac

# Every resource against every version, strict (an unknown field is an error); a kind without
# a schema is an error too, unless it belongs to one of the operators above.
"$VENV/bin/python" - "$OPERATOR_GROUPS" "${KUBERNETES_VERSIONS[*]}" "${rendered[@]}" <<'PY'
import sys

import kubernetes_validate
import yaml

operator_groups = set(sys.argv[1].split())
versions = sys.argv[2].split()
failures = checked = 0
for path in sys.argv[3:]:
    with open(path, encoding="utf-8") as file:
        resources = [doc for doc in yaml.safe_load_all(file) if doc]
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        if resource["apiVersion"].split("/")[0] in operator_groups:
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as err:
                failures += 1
                where = ".".join(str(p) for p in err.path)
                print(f"{path}: {name} (Kubernetes {version}): {where}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError:
                failures += 1
                print(f"{path}: {name}: no schema for {resource['apiVersion']} in Kubernetes {version}")
    print(f"k8s-check: {path.rsplit('/', 1)[1]}: {len(resources)} resources")
if failures:
    sys.exit(f"k8s-check: {failures} failed")
print(f"k8s-check: {checked} validations against Kubernetes {', '.join(versions)} passed")
PY
