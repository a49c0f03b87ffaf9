// A backend app server on Node's own `http` module, so the gateway is tested
// against an HTTP/1.1 implementation nobody on the wsgate team wrote.
// It also accepts WebSocket upgrades (see the end).
// Usage: node app.js NAME PORT   (PORT 0: any free port)
// Prints "listening PORT" once ready. keepAliveTimeout stays at Node's default
// on purpose: the gateway must cope with a backend closing idle connections.
'use strict';
const http = require('http');
const crypto = require('crypto');

const name = process.argv[2] || 'app';
const port = Number(process.argv[3] || 0);
let healthy = true;
let requests = 0;

// The byte at offset i is i % 251: a prime period never lines up with chunk or
// buffer sizes, so a dropped, duplicated or reordered chunk changes the hash.
function pattern(start, len) {
  const buf = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) buf[i] = (start + i) % 251;
  return buf;
}

function send(res, status, body, type = 'text/plain') {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}
const json = (res, obj) => send(res, 200, JSON.stringify(obj), 'application/json');

const CHUNK = 64 * 1024;

// Writes `total` pattern bytes chunk by chunk, waiting for 'drain' whenever the
// socket is full, so a slow client (or gateway) never makes us buffer it all.
// `then` runs once the last chunk has reached the kernel, so /abort really has
// sent its N bytes before it kills the socket.
function streamPattern(res, total, then) {
  let sent = 0;
  function more() {
    while (sent < total) {
      const n = Math.min(CHUNK, total - sent);
      sent += n;
      const last = sent === total;
      const ok = res.write(pattern(sent - n, n), last ? then : undefined);
      if (last) return;
      if (!ok) return res.once('drain', more);
    }
    then(); // total was 0
  }
  more();
}

const server = http.createServer((req, res) => {
  requests++;
  const url = new URL(req.url, 'http://x');
  const q = (k) => Number(url.searchParams.get(k) || 0);
  const route = `${req.method} ${url.pathname}`;

  switch (route) {
    case 'POST /upload': {
      // Hash as the body streams in, so a 50 MB upload costs no 50 MB here.
      const hash = crypto.createHash('sha256');
      let bytes = 0;
      req.on('data', (c) => { bytes += c.length; hash.update(c); });
      req.on('end', () => json(res, { name, bytes, sha256: hash.digest('hex') }));
      return;
    }
    case 'POST /echo':
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      req.pipe(res); // no Content-Length: the echo goes out chunked
      return;
    case 'GET /download': {
      const total = q('bytes');
      const headers = { 'Content-Type': 'application/octet-stream' };
      if (url.searchParams.get('length') === '1') headers['Content-Length'] = total;
      res.writeHead(200, headers);
      streamPattern(res, total, () => res.end());
      return;
    }
    case 'GET /text':
    case 'HEAD /text': {
      // Compressible text of `size` bytes (JSON lines), for compression
      // tests: `type` sets Content-Type, `cc` Cache-Control, `gzip=1` sends
      // it gzip-encoded already, `pause` waits that many ms after the
      // first half, `length=1` says Content-Length.
      const size = q('size');
      let body = '';
      for (let i = 0; body.length < size; i++) body += `{"line":${i},"text":"the proxied text"}\n`;
      body = Buffer.from(body.slice(0, size));
      const headers = { 'Content-Type': url.searchParams.get('type') || 'application/json' };
      if (url.searchParams.get('cc')) headers['Cache-Control'] = url.searchParams.get('cc');
      if (url.searchParams.get('etag')) headers.ETag = url.searchParams.get('etag');
      if (url.searchParams.get('gzip') === '1') {
        body = require('zlib').gzipSync(body);
        headers['Content-Encoding'] = 'gzip';
      }
      if (url.searchParams.get('length') === '1') headers['Content-Length'] = body.length;
      res.writeHead(200, headers);
      const half = Math.floor(body.length / 2);
      res.write(body.subarray(0, half));
      setTimeout(() => res.end(body.subarray(half)), q('pause'));
      return;
    }
    case 'GET /slow':
      setTimeout(() => send(res, 200, 'slow'), q('ms'));
      return;
    case 'GET /abort': {
      // Promise twice what we send, then die: a backend crashing mid-response.
      const n = q('bytes');
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': 2 * n });
      streamPattern(res, n, () => res.socket.destroy());
      return;
    }
    case 'GET /stall': {
      // Promise twice what we send, then go quiet with the socket open: a
      // backend stuck mid-response.
      const n = q('bytes');
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': 2 * n });
      streamPattern(res, n, () => {});
      return;
    }
    case 'GET /status':
      res.writeHead(q('code') || 200);
      res.end();
      return;
    case 'GET /etag':
    case 'HEAD /etag': // Node drops the body of a HEAD answer itself.
      if (req.headers['if-none-match'] === '"v1"') {
        res.writeHead(304, { ETag: '"v1"' });
        res.end();
      } else {
        res.writeHead(200, { ETag: '"v1"', 'Content-Type': 'text/plain', 'Content-Length': 6 });
        res.end('tagged');
      }
      return;
    case 'GET /healthz':
      return healthy ? send(res, 200, 'ok') : send(res, 503, 'down');
    case 'POST /health/down':
    case 'POST /health/up':
      healthy = url.pathname.endsWith('/up');
      return send(res, 200, healthy ? 'up' : 'down');
    case 'GET /count':
      return json(res, { name, requests });
    default:
      // /whoami and anything unknown: show what the gateway actually forwarded.
      // Drain any body first so the connection stays reusable.
      req.resume();
      req.on('end', () => json(res, { name, method: req.method, url: req.url, headers: req.headers }));
  }
});

// WebSocket upgrades on the same server (Node's `ws`), so health checks can be
// tested on WebSocket backends too: a client is greeted with the server's name.
const { WebSocketServer } = require('ws');
new WebSocketServer({ server }).on('connection', (ws) => {
  ws.send(name);
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
