// SPDX-License-Identifier: MIT
// Status that people set (docs/protocol.md section 6): setAvailability,
// setMessage, clearMessage, device, and watched users' availability,
// message and devices merged from snapshots and changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceClient, AVAILABILITIES } from '../presence.js';
import { FakeClock, makeFakeWebSocket, flush } from './fakes.js';

function setup() {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const client = new PresenceClient({
    url: 'ws://example.test/v1/ws', getToken: async () => 'tok', WebSocket: FakeWebSocket,
    timers: clock, random: () => 0.5, window: null, document: null, pingIntervalMs: 0,
  });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  return { clock, sockets, client, errors };
}

async function opened(env, welcome) {
  await flush();
  const ws = env.sockets[env.sockets.length - 1];
  ws.serverOpen(welcome);
  return ws;
}

test('setAvailability sends the message and resolves on ack; errors reject with the code', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  const p = env.client.setAvailability('dnd');
  const sent = ws.sent[ws.sent.length - 1];
  assert.deepEqual({ type: sent.type, availability: sent.availability }, { type: 'availability', availability: 'dnd' });
  ws.serverSend({ type: 'ack', id: sent.id });
  await p;
  const q = env.client.setMessage('x'.repeat(200));
  const sent2 = ws.sent[ws.sent.length - 1];
  ws.serverSend({ type: 'error', code: 'bad_message', message: 'too long', id: sent2.id });
  await assert.rejects(q, (e) => e.code === 'bad_message');
  await assert.rejects(env.client.setAvailability('busy'), (e) => e.code === 'bad_availability');
  assert.deepEqual(AVAILABILITIES, ['auto', 'dnd', 'away', 'invisible']);
});

test('setMessage: clearAfterMs becomes whole seconds, expiresAt is passed, clearMessage sends an empty message', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  env.client.setMessage('Lunch', { emoji: '🥪', clearAfterMs: 1500 }).catch(() => {});
  let m = ws.sent[ws.sent.length - 1];
  assert.deepEqual([m.type, m.text, m.emoji, m.expires_in, m.expires_at], ['message', 'Lunch', '🥪', 2, undefined]);
  env.client.setMessage('Trip', { expiresAt: 1764324000000.7 }).catch(() => {});
  m = ws.sent[ws.sent.length - 1];
  assert.deepEqual([m.text, m.expires_at, m.expires_in], ['Trip', 1764324000000, undefined]);
  env.client.clearMessage().catch(() => {});
  m = ws.sent[ws.sent.length - 1];
  assert.deepEqual(Object.keys(m).sort(), ['id', 'type']);
});

test('requests before connecting or cut by a close reject with not_connected', async () => {
  const env = setup();
  await assert.rejects(env.client.setAvailability('away'), (e) => e.code === 'not_connected');
  env.client.connect();
  const ws = await opened(env);
  const p = env.client.setAvailability('away');
  ws.serverClose ? ws.serverClose(1006) : ws.onclose({ code: 1006, reason: '' });
  await assert.rejects(p, (e) => e.code === 'not_connected');
});

test('device comes from the welcome (web by default)', async () => {
  const env = setup();
  assert.equal(env.client.device, null);
  env.client.connect();
  await opened(env, { device: 'mobile' });
  assert.equal(env.client.device, 'mobile');
  const env2 = setup();
  env2.client.connect();
  await opened(env2);
  assert.equal(env2.client.device, 'web');
});

test('watched users: availability, message and devices from the snapshot, merged from changes', async () => {
  const env = setup();
  const seen = [];
  env.client.subscribe('bob', (u, ch) => seen.push([ch.kind, u.status, u.availability]));
  env.client.connect();
  const ws = await opened(env);
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', availability: 'auto',
    since: 1, last_seen: 1, last_active: 1, version: 3, message: null, devices: { web: 'online' } }] });
  // dnd: a status change
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'status', status: 'online',
    availability: 'dnd', from: 'online', since: 2, last_seen: 2, reason: 'explicit', version: 4, seq: 10 }] });
  // a device appears (each change a watcher is sent moves the version by one)
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'device', availability: 'dnd',
    device: 'mobile', device_status: 'online', reason: 'connect', version: 5, seq: 11 }] });
  // a message
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'message', status: 'online',
    availability: 'dnd', message: { text: 'Lunch', emoji: '🥪', expires: 99 }, reason: 'explicit', version: 6, seq: 12 }] });
  let b = env.client.get('bob');
  assert.equal(b.availability, 'dnd');
  assert.deepEqual(b.devices, { web: 'online', mobile: 'online' });
  assert.deepEqual(b.message, { text: 'Lunch', emoji: '🥪', expires: 99 });
  // the mobile device goes; then the message expires
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'device', availability: 'dnd',
    device: 'mobile', device_status: 'offline', reason: 'disconnect', version: 7, seq: 13 }] });
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'message', status: 'online',
    availability: 'dnd', message: null, reason: 'expired', version: 8, seq: 14 }] });
  b = env.client.get('bob');
  assert.deepEqual(b.devices, { web: 'online' });
  assert.equal(b.message, null);
  // invisible: offline, no devices
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'status', status: 'offline',
    availability: 'auto', from: 'online', since: 3, last_seen: 3, reason: 'explicit', version: 9, seq: 15 }] });
  b = env.client.get('bob');
  assert.equal(b.status, 'offline');
  assert.deepEqual(b.devices, {});
  // an old change is still ignored
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'status', status: 'online',
    availability: 'auto', version: 6, seq: 9 }] });
  assert.equal(env.client.get('bob').status, 'offline');
  assert.deepEqual(seen.map((s) => s[0]), [null, 'status', 'device', 'message', 'device', 'message', 'status']);
  // get() copies deeply
  env.client.get('bob').devices.x = 'online';
  assert.deepEqual(env.client.get('bob').devices, {});
});

test('an availability change replaces the device map with the one it carries (protocol 6.4)', async () => {
  const env = setup();
  env.client.subscribe('bob', () => {});
  env.client.connect();
  const ws = await opened(env);
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', availability: 'auto',
    since: 1, last_seen: 1, last_active: 1, version: 3, message: null, devices: { web: 'online', mobile: 'idle' } }] });
  // dnd shows the idle device online: the change says so for every device
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'status', status: 'online',
    availability: 'dnd', from: 'online', since: 2, last_seen: 2, devices: { web: 'online', mobile: 'online' },
    reason: 'explicit', version: 4, seq: 10 }] });
  assert.deepEqual(env.client.get('bob').devices, { web: 'online', mobile: 'online' });
  // invisible, then visible again: the devices come back with the change
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'status', status: 'offline',
    availability: 'auto', from: 'online', since: 3, last_seen: 3, devices: {}, reason: 'explicit', version: 5, seq: 11 }] });
  assert.deepEqual(env.client.get('bob').devices, {});
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'status', status: 'online',
    availability: 'auto', from: 'offline', since: 4, last_seen: 4, devices: { web: 'online', mobile: 'idle' },
    reason: 'explicit', version: 6, seq: 12 }] });
  assert.deepEqual(env.client.get('bob').devices, { web: 'online', mobile: 'idle' });
});

test('a callback added for a known user gets a copy and a change as typed (kind null): changing it changes nothing known', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  env.client.subscribe(['bob']);
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', version: 1, devices: { web: 'online' }, message: { text: 'hi', emoji: null, expires: null } }] });
  let got;
  env.client.subscribe(['bob'], (u, change) => { got = change; u.devices.web = 'idle'; u.message.text = 'changed'; });
  assert.deepEqual(got, { snapshot: true, kind: null, from: null, reason: null, seq: null });
  assert.deepEqual(env.client.get('bob').devices, { web: 'online' });
  assert.equal(env.client.get('bob').message.text, 'hi');
});

test('own availability: invisible is known though our own user is shown offline/auto (reload, another tab)', async () => {
  // A page reloaded while the user is invisible watches itself and gets
  // {status: offline, availability: auto}, what watchers see: its picker
  // said "auto" and nothing said the user was invisible.
  const env = setup();
  const seen = [];
  env.client.on('availability', (e) => seen.push(e.availability));
  env.client.subscribe(['me']);
  assert.equal(env.client.availability, null);
  env.client.connect();
  const ws = await opened(env); // welcome: user_id 'me'
  const sub = ws.sent.find((m) => m.type === 'subscribe');
  ws.serverSend({ type: 'presence', snapshot: true, id: sub.id, users: [
    { user_id: 'me', status: 'offline', availability: 'auto', since: 0, last_seen: 5, version: 4, message: null, devices: {} }] });
  assert.equal(env.client.availability, 'invisible');
  assert.equal(env.client.get('me').status, 'offline'); // get() stays what watchers see
  // Another tab sets dnd: our own user comes back online, dnd.
  ws.serverSend({ type: 'presence', snapshot: false, users: [
    { user_id: 'me', change: 'status', status: 'online', availability: 'dnd', from: 'offline', since: 9, last_seen: 9, devices: { web: 'online' }, reason: 'explicit', version: 5, seq: 1 }] });
  assert.equal(env.client.availability, 'dnd');
  // This tab sets away: known at the ack, whatever is watched.
  const p = env.client.setAvailability('away');
  ws.serverSend({ type: 'ack', id: ws.sent[ws.sent.length - 1].id });
  await p;
  assert.equal(env.client.availability, 'away');
  assert.deepEqual(seen, ['invisible', 'dnd', 'away']);
});

test('a refused request rejects its promise and is not emitted again as an error event', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  const p = env.client.setMessage('x'.repeat(200));
  ws.serverSend({ type: 'error', code: 'bad_message', message: 'too long', id: ws.sent[ws.sent.length - 1].id });
  await assert.rejects(p, (e) => e.code === 'bad_message');
  assert.deepEqual(env.errors, []);
  // An error frame that answers no request is still an event.
  ws.serverSend({ type: 'error', code: 'too_many_watched', message: 'limit', id: 99 });
  assert.deepEqual(env.errors.map((e) => e.code), ['too_many_watched']);
});

test('setMessage: clearAfterMs 0 is never; NaN, negative or not a number is refused without sending', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  env.client.setMessage('Lunch', { clearAfterMs: 0 }).catch(() => {});
  const m = ws.sent[ws.sent.length - 1];
  assert.deepEqual([m.text, m.expires_in, m.expires_at], ['Lunch', undefined, undefined]);
  const n = ws.sent.length;
  for (const bad of [NaN, -5, '60000', Infinity]) {
    await assert.rejects(env.client.setMessage('Lunch', { clearAfterMs: bad }), (e) => e.code === 'bad_expiry', String(bad));
  }
  await assert.rejects(env.client.setMessage('Lunch', { expiresAt: 'tomorrow' }), (e) => e.code === 'bad_expiry');
  assert.equal(ws.sent.length, n, 'nothing sent');
  env.client.setMessage('Trip', { expiresAt: new Date(1764324000000) }).catch(() => {});
  assert.equal(ws.sent[ws.sent.length - 1].expires_at, 1764324000000);
});

test('own availability is forgotten when the next session is another user\'s (logout, login)', async () => {
  const env = setup();
  env.client.connect();
  let ws = await opened(env);
  const p = env.client.setAvailability('invisible');
  ws.serverSend({ type: 'ack', id: ws.sent[ws.sent.length - 1].id });
  await p;
  assert.equal(env.client.availability, 'invisible');
  env.client.close();
  env.client.connect();
  ws = await opened(env, { user_id: 'me' }); // the same user: still known
  assert.equal(env.client.availability, 'invisible');
  env.client.close();
  env.client.connect();
  await opened(env, { user_id: 'someone-else' });
  assert.equal(env.client.availability, null);
});
