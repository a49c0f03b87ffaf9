// Starts COUNT socket.io-client clients at once against URL and checks each one
// connects, upgrades from polling to websocket, and gets all its acks from one
// server: what breaks first when a balancer is not sticky.
// Usage: node socketio-clients.js URL COUNT
// Prints one JSON line {ok, failed, upgraded, servers, errors}; exits 0 only if
// every client succeeded and upgraded.
'use strict';
const { io } = require('socket.io-client');

const url = process.argv[2];
const count = Number(process.argv[3] || 1);
const DEADLINE_MS = 20000;

const result = { ok: 0, failed: 0, upgraded: 0, servers: {}, errors: [] };
// Where each unfinished client is, so a deadline failure says where it hung.
const stage = new Map();

function runClient(i) {
  return new Promise((resolve) => {
    const socket = io(url, {
      reconnection: false,
      forceNew: true, // one engine per client, not one shared Manager
      // Node's client sends these on polling requests and the websocket
      // upgrade alike, so the gateway can key stickiness on them if it likes.
      extraHeaders: { 'x-client-id': `client-${i}` },
    });
    let settled = false;
    stage.set(i, 'connecting');
    const finish = (err, server) => {
      if (settled) return;
      settled = true;
      stage.delete(i);
      socket.disconnect();
      if (err) {
        result.failed++;
        result.errors.push(`client-${i}: ${err}`);
      } else {
        result.ok++;
        result.servers[server] = (result.servers[server] || 0) + 1;
      }
      resolve();
    };
    const describe = (e) => {
      // Transport errors hide the server's answer (e.g. "Session ID unknown")
      // in description/context; surface it so a failing test says why.
      let msg = (e && e.message) || String(e);
      const d = e && e.description;
      if (d) msg += ` (${d.message || (d.target && d.target.responseText) || d})`;
      if (e && e.context && e.context.responseText) msg += ` [${e.context.responseText}]`;
      return msg;
    };
    socket.on('connect_error', (e) => finish(`connect_error: ${describe(e)}`));
    socket.on('disconnect', (reason, details) => {
      if (!settled) finish(`disconnect: ${reason}${details ? ' ' + describe(details) : ''}`);
    });
    socket.io.on('error', (e) => finish(`manager error: ${describe(e)}`));

    // The engine starts its websocket probe as soon as it opens, often before
    // the Socket.IO 'connect' arrives, so watch for the outcome from then on:
    // a failed probe leaves the client quietly on polling, and would otherwise
    // only show up as a deadline.
    const upgraded = new Promise((ok, fail) => {
      socket.io.once('open', () => {
        const engine = socket.io.engine;
        if (engine.transport.name === 'websocket') return ok();
        engine.once('upgrade', ok);
        engine.once('upgradeError', (e) => fail(new Error(`upgrade failed: ${describe(e)}`)));
      });
    });
    upgraded.catch(() => {}); // reported when awaited below

    socket.on('connect', async () => {
      try {
        stage.set(i, 'upgrading');
        await upgraded;
        result.upgraded++;
        const seen = new Set();
        for (let n = 0; n < 5; n++) {
          stage.set(i, `ack ${n + 1}/5`);
          const payload = `client-${i}-msg-${n}`;
          const reply = await socket.timeout(5000).emitWithAck('hello', payload);
          if (reply.echo !== payload) throw new Error(`bad echo ${JSON.stringify(reply)}`);
          if (reply.transport !== 'websocket') throw new Error(`ack over ${reply.transport}`);
          seen.add(reply.server);
        }
        if (seen.size !== 1) throw new Error(`acks from several servers: ${[...seen]}`);
        finish(null, [...seen][0]);
      } catch (e) {
        finish(describe(e));
      }
    });
  });
}

const clients = [];
for (let i = 0; i < count; i++) clients.push(runClient(i));

const timer = setTimeout(() => {
  for (const [i, where] of stage) {
    result.failed++;
    result.errors.push(`client-${i}: deadline (${DEADLINE_MS} ms) hit while ${where}`);
  }
  report();
}, DEADLINE_MS);

Promise.all(clients).then(report);

let reported = false;
function report() {
  if (reported) return;
  reported = true;
  clearTimeout(timer);
  const good = result.ok === count && result.upgraded === count && result.failed === 0;
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(good ? 0 : 1));
}
