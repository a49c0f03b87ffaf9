// Debian's headless Chromium as the browser tests start it: no sandbox (the
// tests run as root), no GPU, none of Chromium's own background connections
// (this machine's network is closed), and HOME set to `home`, whose NSS
// database holds any test CA the page's certificate needs.
import { chromium } from 'playwright-core';

export function launch(home, extraArgs = []) {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    env: { ...process.env, HOME: home },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
    timeout: 20_000,
  });
}
