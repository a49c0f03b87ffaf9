#!/usr/bin/env bash
# Installs the Debian packages named as arguments, as root or through sudo:
# what the tests' own install scripts share. Tests running at once (each
# test binary runs its tests in parallel) take turns: apt-get refuses to
# start while another holds its lock, so they queue on a lock of our own.
set -euo pipefail

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
exec 9>"${TMPDIR:-/tmp}/wsgate-tests-apt.lock"
flock 9
# Another test may have installed them while this one waited.
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$' ||
        missing+=("$package")
done
((${#missing[@]})) || exit 0
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
