#!/usr/bin/env bash
# Checks everything under deploy/: the Dockerfile (hadolint), the systemd
# units (systemd-analyze verify and security), the Kubernetes manifests
# (kubernetes-validate, and kubernetes/consistency.py for what a schema
# cannot see), and the Prometheus and Grafana files (prometheus/check.sh).
# Installs its own tools: a Python venv in target/deploy-venv, and Debian's
# systemd package if systemd-analyze is missing.
#
# Usage: deploy/check.sh [WSGATE_BINARY]   (default: target/debug/wsgate)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
binary="$(realpath -m "${1:-${repo}/target/debug/wsgate}")"
if [[ ! -x "${binary}" ]]; then
    echo "no wsgate binary at ${binary}: run cargo build first" >&2
    exit 1
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
    sudo=(sudo)
fi

venv="${repo}/target/deploy-venv"
if ! cmp -s "${here}/requirements.txt" "${venv}/requirements.txt"; then
    python3 -m venv "${venv}"
    "${venv}/bin/pip" install --quiet --disable-pip-version-check -r "${here}/requirements.txt"
    cp "${here}/requirements.txt" "${venv}/requirements.txt"
fi

echo "== hadolint deploy/Dockerfile"
"${venv}/bin/hadolint" "${here}/Dockerfile"

echo "== systemd units"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends systemd
fi
units="$(mktemp -d)"
trap 'rm -rf "${units}"' EXIT
# verify insists that ExecStart's program exists: point it at the binary
# under test. The template is verified as an instance too.
for unit in "${here}"/systemd/*.service; do
    sed "s#/usr/local/bin/wsgate#${binary}#g" "${unit}" >"${units}/$(basename "${unit}")"
done
cp "${units}/wsgate@.service" "${units}/wsgate@a.service"
for unit in "${units}"/*.service; do
    # Unknown keys and bad values are only warnings to systemd (exit 0),
    # but a unit with any of them is not what we meant to ship.
    complaints="$(cd "${units}" && systemd-analyze verify "./$(basename "${unit}")" 2>&1)"
    if [[ -n "${complaints}" ]]; then
        echo "${complaints}" >&2
        exit 1
    fi
    echo "verified $(basename "${unit}")"
done
# Exposure 2.5 or below out of 10 ("OK"): the hardening stays in place.
(cd "${units}" && systemd-analyze security --offline=yes --threshold=25 ./wsgate.service | tail -1)
# The template is the plain unit plus an instance name: comments and the
# description may differ, nothing else.
if ! diff <(grep -v -e '^#' -e '^Description=' "${here}/systemd/wsgate.service") \
          <(grep -v -e '^#' -e '^Description=' "${here}/systemd/wsgate@.service"); then
    echo "deploy/systemd/wsgate.service and wsgate@.service differ (above)" >&2
    exit 1
fi

echo "== Kubernetes manifests"
# kubernetes-validate has no schema for the Kustomization itself or for the
# Prometheus Operator's ServiceMonitor (consistency.py checks that one); any
# other kind without a schema is a typo in apiVersion or kind.
manifests=("${here}"/kubernetes/*.yaml "${here}"/kubernetes/variants/*.yaml)
report="$("${venv}/bin/kubernetes-validate" --strict "${manifests[@]}" 2>&1)" || {
    echo "${report}" >&2
    exit 1
}
echo "${report}"
if grep '^WARN' <<<"${report}" | grep -v -e 'kind Kustomization ' -e 'kind ServiceMonitor '; then
    echo "unexpected warnings from kubernetes-validate (above)" >&2
    exit 1
fi
"${venv}/bin/python" "${here}/kubernetes/consistency.py" "${here}/kubernetes"
if command -v kubectl >/dev/null 2>&1; then
    # What `kubectl apply -k` would send, with the labels and images kustomize adds.
    rendered="${units}/rendered.yaml"
    kubectl kustomize "${here}/kubernetes" >"${rendered}"
    "${venv}/bin/kubernetes-validate" --strict --quiet "${rendered}" || {
        echo "the kustomize output does not validate" >&2
        exit 1
    }
    echo "kubectl kustomize output validates"
else
    echo "kubectl not installed: the kustomize rendering is not checked"
fi

echo "== Prometheus and Grafana"
"${here}/prometheus/check.sh"
