// SPDX-License-Identifier: MIT
// docs/guides/socketio.md's example against a real presenced: a Socket.IO
// app reports its sockets through the Node adapter; a socket.io-client user
// comes online, goes idle by an event, and offline when it disconnects.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { io as ioClient } from 'socket.io-client';
import { PresenceAPI } from '../index.js';
import { Presenced, waitFor, freePort, API_KEY } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const pd = new Presenced();
let api, app, port, supported = false;
before(async () => {
  await pd.start();
  api = new PresenceAPI({ url: pd.url, apiKey: API_KEY });
  supported = (await fetch(`${pd.url}/v1/origins`, { headers: { Authorization: `Bearer ${API_KEY}` } })).status === 200;
  if (!supported) return;
  port = await freePort();
  app = spawn(process.execPath, [path.join(here, '../examples/socketio-presence.js')], {
    env: { ...process.env, PRESENCED_URL: pd.url, PRESENCED_API_KEY: API_KEY, PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    app.stdout.once('data', resolve);
    app.once('exit', (c) => reject(new Error('example exited ' + c)));
  });
});
after(async () => {
  if (app && app.exitCode === null) { app.kill('SIGTERM'); await new Promise((r) => app.once('exit', r)); }
  await pd.stop();
});

test('a Socket.IO app reports its sockets with one call', async (t) => {
  if (!supported) return t.skip('this presenced has no backend session connection (GET /v1/origins: 404)');
  const alice = ioClient(`http://127.0.0.1:${port}`, { auth: { user: 'alice' }, transports: ['websocket'] });
  await new Promise((r) => alice.once('connect', r));
  await waitFor(async () => (await api.getUser('alice')).status === 'online', { what: 'alice online' });
  const seen = await alice.timeout(5000).emitWithAck('who', ['alice', 'bob']);
  assert.deepEqual(seen.map((u) => `${u.user_id} ${u.status}`), ['alice online', 'bob offline']);
  alice.emit('presence:status', 'idle');                      // the seed's setStatusIdle
  await waitFor(async () => (await api.getUser('alice')).status === 'idle', { what: 'alice idle' });
  // Rooms, once this presenced serves channels (GET /v1/channels/{name}: not 404).
  if ((await api.channel('room:0').catch((e) => e)).status !== 404) {
    alice.emit('enter', 'room:1', { color: 'red' });
    await waitFor(async () => (await api.channel('room:1')).count === 1, { what: 'alice in room:1' });
  } else t.diagnostic('channels not served by this presenced: the room part is not checked');
  alice.disconnect();
  await waitFor(async () => (await api.getUser('alice')).status === 'offline', { what: 'alice offline' });
});
