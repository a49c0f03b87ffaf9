// The classic `ws` echo server (its README's "Simple server" example),
// listening on the port given as the first argument (0: any free port).
// Prints "listening PORT" once ready. Pass --deflate to offer permessage-deflate.
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const perMessageDeflate = process.argv.includes('--deflate');
const wss = new WebSocketServer({ port, host: '127.0.0.1', perMessageDeflate, maxPayload: 64 * 1024 * 1024 });

wss.on('connection', function connection(ws) {
  ws.on('error', console.error);
  ws.on('message', function message(data, isBinary) {
    ws.send(data, { binary: isBinary });
  });
});

wss.on('listening', () => {
  console.log(`listening ${wss.address().port}`);
});
