#!/usr/bin/env bash
# Installs what tests/browser.rs needs: Debian's Chromium (the browser under
# test; never a downloaded one), certutil to build the NSS database that
# makes Chromium trust the test CA, and playwright-core to drive it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ ! -x /usr/bin/chromium ]] || ! command -v certutil >/dev/null 2>&1; then
    "$here/../apt-get.sh" chromium libnss3-tools
fi

if [[ ! -e "$here/node_modules/playwright-core/package.json" ]]; then
    # playwright-core never downloads a browser; this is belt and braces.
    (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
