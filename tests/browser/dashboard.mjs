// Opens wsgate's dashboard (the admin listener's GET /) in Debian's headless
// Chromium, waits until it shows `route` with one open session, then until
// that route's message count moves, saves a screenshot, and prints what it
// read as one JSON line. Usage: node dashboard.mjs URL ROUTE SCREENSHOT HOME
import { launch } from './launch.mjs';

const [url, route, screenshot, home] = process.argv.slice(2);
if (!url || !route || !screenshot || !home) {
  console.error('usage: node dashboard.mjs URL ROUTE SCREENSHOT HOME');
  process.exit(2);
}

let browser;
try {
  browser = await launch(home);
  const page = await browser.newPage({ viewport: { width: 1400, height: 700 } });
  const log = [];
  page.on('console', (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
  // Anything the page fetched from elsewhere would show up here.
  const requested = [];
  page.on('request', (r) => requested.push(r.url()));
  const response = await page.goto(url, { timeout: 10_000 });
  if (!response || !response.ok()) {
    throw new Error(`loading ${url}: ${response ? response.status() : 'no response'}`);
  }
  const field = (name) => `#routes tr[data-route="${route}"] td[data-field="${name}"]`;
  const read = (name) => page.locator(field(name)).textContent({ timeout: 10_000 });
  try {
    await page.waitForFunction(
      (selector) => document.querySelector(selector)?.textContent === '1',
      field('sessions'),
      { timeout: 10_000 },
    );
    const before = await read('messages');
    await page.waitForFunction(
      ([selector, first]) => document.querySelector(selector)?.textContent !== first,
      [field('messages'), before],
      { timeout: 10_000 },
    );
    const after = await read('messages');
    const backendSessions = await page
      .locator('#backends td[data-field="sessions"]')
      .first()
      .textContent();
    await page.screenshot({ path: screenshot, fullPage: true });
    const foreign = requested.filter((u) => !u.startsWith(new URL(url).origin));
    console.log(JSON.stringify({ sessions: 1, before, after, backendSessions, foreign }));
  } catch (e) {
    throw new Error(`${e.message}\npage console:\n${log.join('\n')}`);
  }
  await browser.close();
  process.exit(0);
} catch (e) {
  console.error(`dashboard check failed: ${e.stack || e}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
