#!/usr/bin/env bash
# Installs the Debian packages named as arguments, as root or through sudo:
# what the tests' own install scripts share.
set -euo pipefail

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "$@"
