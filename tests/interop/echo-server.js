// The classic `ws` echo server (its README's "Simple server" example),
// listening on the port given as the first argument (0: any free port).
// Prints "listening PORT" once ready. Pass --deflate to offer permessage-deflate,
// and --tls CERT KEY to serve wss:// (Node's https server under ws).
'use strict';
const fs = require('fs');
const https = require('https');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const perMessageDeflate = process.argv.includes('--deflate');
const maxPayload = 64 * 1024 * 1024;
const tlsAt = process.argv.indexOf('--tls');
let wss;
if (tlsAt > 0) {
  const server = https.createServer({
    cert: fs.readFileSync(process.argv[tlsAt + 1]),
    key: fs.readFileSync(process.argv[tlsAt + 2]),
  });
  wss = new WebSocketServer({ server, perMessageDeflate, maxPayload });
  server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
} else {
  wss = new WebSocketServer({ port, host: '127.0.0.1', perMessageDeflate, maxPayload });
  wss.on('listening', () => console.log(`listening ${wss.address().port}`));
}

wss.on('connection', function connection(ws) {
  ws.on('error', console.error);
  ws.on('message', function message(data, isBinary) {
    ws.send(data, { binary: isBinary });
  });
});

