// Loads a page from wsgate in Debian's headless Chromium and prints, as one
// JSON line the protocol the page came over, the HTTP status of the page's
// WebSocket handshake (101 means HTTP/1.1; over HTTP/2 it would be 200) and
// the `window.result` the page's script sets. Usage: node check.mjs URL HOME
//
// HOME holds the NSS database (.pki/nssdb) that trusts the test CA: that is
// how Chromium on Linux learns of user-added roots, so the browser verifies
// the gateway's certificate for real.
import { launch } from './launch.mjs';

const [url, home] = process.argv.slice(2);
if (!url || !home) {
  console.error('usage: node check.mjs URL HOME');
  process.exit(2);
}

let browser;
try {
  browser = await launch(home, [
    // QUIC would bypass the TCP listener under test.
    '--disable-quic',
    // The gateway listens on 127.0.0.1 only; never try ::1 first.
    '--host-resolver-rules=MAP localhost 127.0.0.1',
  ]);
  const page = await browser.newPage();
  const messages = [];
  page.on('console', (m) => messages.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => messages.push(`pageerror: ${e.message}`));
  // Playwright does not say which protocol a WebSocket used; DevTools does.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  let websocketStatus = null;
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    websocketStatus = e.response.status;
  });
  const response = await page.goto(url, { timeout: 10_000 });
  if (!response || !response.ok()) {
    throw new Error(`loading ${url}: ${response ? response.status() : 'no response'}`);
  }
  try {
    await page.waitForFunction(() => window.result, null, { timeout: 10_000 });
  } catch (e) {
    throw new Error(`${e.message}\npage console:\n${messages.join('\n')}`);
  }
  const protocol = await page.evaluate(
    () => performance.getEntriesByType('navigation')[0].nextHopProtocol,
  );
  const result = await page.evaluate(() => window.result);
  // Chromium says on the console why a WebSocket failed (net::ERR_...);
  // a failed run then explains itself.
  const report = { protocol, websocketStatus, result };
  if (result && result.error) report.console = messages;
  console.log(JSON.stringify(report));
  await browser.close();
  process.exit(0);
} catch (e) {
  console.error(`browser check failed: ${e.stack || e}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
