// A Socket.IO v4 server with its defaults (polling then websocket upgrade, path
// /socket.io). Polling needs every request of a session to reach the process
// that holds it; nothing here helps with that, on purpose: with several of these
// behind the gateway, only the gateway's sticky sessions keep clients working.
// Usage: node socketio-server.js NAME PORT   (PORT 0: any free port)
// Prints "listening PORT" once ready.
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const name = process.argv[2] || 'sio';
const port = Number(process.argv[3] || 0);

const server = http.createServer();
const io = new Server(server);

io.on('connection', (socket) => {
  // The ack names this server and the transport in use, so the client can tell
  // whether every message of its session landed on one backend.
  socket.on('hello', (payload, ack) => {
    if (typeof ack === 'function') {
      ack({ server: name, echo: payload, transport: socket.conn.transport.name });
    }
  });
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
