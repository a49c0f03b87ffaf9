#!/usr/bin/env bash
# Installs what tests/limits.rs needs to send the PROXY protocol from a
# real load balancer: Debian's `haproxy` package.
set -euo pipefail

if command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]]; then
    exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" haproxy
