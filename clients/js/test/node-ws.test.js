// SPDX-License-Identifier: MIT
// The client in node with the npm `ws` package (README "Node"), against a
// loopback server of the test's own: what only the real `ws` does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { PresenceClient } from '../presence.js';

// npm ws: clients/js's devDependency, or the browser suite's copy (run.sh
// installs that one); without either these tests are skipped.
async function loadWs() {
  for (const spec of ['ws', '../../../tests/browser/node_modules/ws/wrapper.mjs']) {
    try { return (await import(spec)).default; } catch (_) { /* next */ }
  }
  return null;
}
const WebSocket = await loadWs();
const needWs = { skip: WebSocket ? false : 'npm ws is not installed' };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A loopback TCP server that accepts and never answers the upgrade: the
// client's socket stays CONNECTING. Ports 45000-47999, picked at random.
async function silentServer() {
  for (let i = 0; i < 50; i++) {
    const port = 45000 + Math.floor(Math.random() * 3000);
    const conns = [];
    const srv = net.createServer((c) => { conns.push(c); if (out.onConn) out.onConn(c); });
    const out = { port, conns, stop: () => { for (const c of conns) c.destroy(); return new Promise((r) => srv.close(r)); } };
    const ok = await new Promise((resolve) => {
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) return out;
  }
  throw new Error('no free port in 45000-47999');
}

test('close() while the socket is still connecting does not crash node (ws emits an error then)', needWs, async () => {
  const srv = await silentServer();
  const c = new PresenceClient({ url: 'ws://127.0.0.1:' + srv.port + '/v1/ws', WebSocket, getToken: () => 't', window: null, document: null });
  const states = [];
  c.on('state', (s) => states.push(s.state));
  c.connect();
  for (let i = 0; i < 100 && srv.conns.length === 0; i++) await sleep(20);
  assert.equal(srv.conns.length, 1, 'the client reached the server');
  assert.equal(c.state, 'connecting');
  c.close();
  await sleep(100); // ws emits its 'error' on the next tick: without a listener, node dies here
  assert.equal(c.state, 'closed');
  assert.deepEqual(states, ['connecting', 'closed']);
  await srv.stop();
});

test('a server that accepts but never answers the upgrade: no welcome within connectTimeoutMs, the client retries', needWs, async () => {
  const srv = await silentServer();
  const c = new PresenceClient({
    url: 'ws://127.0.0.1:' + srv.port + '/v1/ws', WebSocket, getToken: () => 't', window: null, document: null,
    connectTimeoutMs: 300, reconnect: { initialDelayMs: 50, jitter: 0 },
  });
  const states = [];
  const errors = [];
  c.on('state', (s) => states.push(s.state + (s.code ? ':' + s.code : '')));
  c.on('error', (e) => errors.push(e.kind));
  c.connect();
  for (let i = 0; i < 100 && srv.conns.length < 2; i++) await sleep(20);
  c.close();
  await sleep(50);
  assert.equal(srv.conns.length, 2, 'a second attempt after the first hung');
  assert.deepEqual(states.slice(0, 4), ['connecting', 'closed:4000', 'reconnecting', 'connecting']);
  assert.equal(errors[0], 'timeout');
  await srv.stop();
});

// A server that completes the upgrade and sends a welcome, then answers
// nothing, not even a close frame: a peer gone dead behind a live TCP path.
async function deadAfterWelcomeServer() {
  const crypto = await import('node:crypto');
  const srv = await silentServer();
  const frame = (text) => {
    const b = Buffer.from(text);
    return Buffer.concat([Buffer.from([0x81, b.length]), b]); // < 126 bytes
  };
  const closed = [];
  srv.onConn = (c) => {
    let head = '';
    c.on('data', (d) => {
      if (head.includes('\r\n\r\n')) return; // after the upgrade: ignore everything
      head += d.toString('latin1');
      const key = /sec-websocket-key: *(\S+)/i.exec(head);
      if (!head.includes('\r\n\r\n') || !key) return;
      const accept = crypto.createHash('sha1').update(key[1] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
      c.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n');
      c.write(frame(JSON.stringify({ type: 'welcome', protocol: 1, session_id: 's', user_id: 'u', heartbeat_ms: 25000, timeout_ms: 60000 })));
    });
    c.on('close', () => closed.push(Date.now()));
  };
  srv.closed = closed;
  return srv;
}

test('a connection dropped for a missing pong is closed at once, not after ws\'s 30 s closing handshake (node could not exit)', needWs, async () => {
  const srv = await deadAfterWelcomeServer();
  const c = new PresenceClient({
    url: 'ws://127.0.0.1:' + srv.port + '/v1/ws', WebSocket, getToken: () => 't', window: null, document: null,
    pingIntervalMs: 200, pongTimeoutMs: 200, reconnect: { initialDelayMs: 5000, jitter: 0 },
  });
  const errors = [];
  c.on('error', (e) => errors.push(e.kind));
  c.connect();
  for (let i = 0; i < 100 && c.state !== 'reconnecting'; i++) await sleep(20);
  assert.equal(c.state, 'reconnecting');
  assert.deepEqual(errors, ['timeout']);
  const dropped = Date.now();
  c.close();
  for (let i = 0; i < 50 && srv.closed.length === 0; i++) await sleep(20);
  assert.equal(srv.closed.length, 1, 'the dead connection is gone');
  assert.ok(srv.closed[0] - dropped < 1000);
  await srv.stop();
});
