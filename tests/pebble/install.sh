#!/usr/bin/env bash
# Installs what tests/acme.rs needs: Debian's `pebble` package, Let's
# Encrypt's test CA with its challenge test server (pebble-challtestsrv).
set -euo pipefail

if command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1; then
    exit 0
fi
"$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" pebble
