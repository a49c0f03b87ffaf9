#!/usr/bin/env bash
# Installs what tests/metrics.rs and deploy/prometheus/check.sh need: Debian's
# `prometheus` package, which brings both the server and promtool.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" prometheus
