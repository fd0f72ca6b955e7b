// SPDX-License-Identifier: MIT
// The backend session connection against a real presenced: sessions reported
// by this process, batched and acknowledged; a dropped connection and a
// restarted backend re-assert their list with no event; a kick comes back as
// `ended`; a `ws` server's connections reported by one call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocketServer, WebSocket } from 'ws';
import { BackendConnection, trackWebSocketServer } from '../index.js';
import { backendSuite, waitFor, sleep, API_KEY } from './lib.js';

const suite = backendSuite({ before, after });
const { pd, mk, skipUnlessSupported } = suite;

/** Events of the log from now on; .items grows, .stop() ends. */
function record() {
  const stream = suite.api.events({ retryMs: 50 });
  const items = [];
  const done = (async () => { for await (const e of stream) items.push(e); })().catch(() => {});
  return { items, stream, connected: waitFor(() => stream.connects >= 1, { what: 'stream' }), stop: async () => { stream.close(); await done; } };
}

test('sessions reported over the connection: open, status, close, with acks', async (t) => {
  if (skipUnlessSupported(t)) return;
  const b = mk(t, { origin: 'node-a' });
  const w = await b.connect();
  assert.equal(w.resumed, false);
  const s1 = b.open('alice', { meta: { name: 'Alice' }, device: 'web' });
  const s2 = b.open('alice');
  const s3 = b.open('bob', { status: 'idle' });
  await b.flush();
  assert.equal(b.stats.opsAcked, 3);
  assert.deepEqual((await suite.api.getUsers(['alice', 'bob'])).map((u) => [u.status, u.sessions]), [['online', 2], ['idle', 1]]);
  const [o] = await suite.api.origins().then((os) => os.filter((x) => x.origin === 'node-a'));
  assert.equal(o.sessions, 3);
  b.setStatus(s1, 'idle'); b.setStatus(s2, 'idle');
  await b.flush();
  assert.equal((await suite.api.getUser('alice')).status, 'idle');
  b.close(s1); b.close(s2); b.close(s3);
  await b.flush();
  assert.deepEqual((await suite.api.getUsers(['alice', 'bob'])).map((u) => u.status), ['offline', 'offline']);
  const rejected = [];
  b.on('rejected', (r) => rejected.push(r.code));
  b.open('');                                  // not a valid user id
  b.setStatus('nope', 'idle');                 // not held: not even sent
  await b.flush();
  assert.deepEqual(rejected, ['bad_user_id']);
  assert.equal(b.sessions.size, 0, 'a refused open is not kept');
  await b.end({ bye: true });
});

test('a dropped connection and a restarted backend re-assert their sessions: no event', async (t) => {
  if (skipUnlessSupported(t)) return;
  const b = mk(t, { origin: 'node-b', retryMs: 20 });
  await b.connect();
  const ids = [];
  for (let i = 0; i < 200; i++) ids.push(b.open('u' + (i % 50), { session: 'b-' + i }));
  await b.flush();
  const rec = record();
  t.after(() => rec.stop());
  await rec.connected;
  b.reconnect();                               // the network drops
  await waitFor(() => b.connects === 2, { what: 'reconnected' });
  await b.flush();
  const gone = ids.slice(0, 5);
  for (const id of gone) b.close(id);          // and the list changes afterwards
  await b.flush();
  await b.end();                               // a plain close: kept for the resume window

  // A restarted process with the same origin, holding the same sessions (minus the 5).
  const b2 = mk(t, { origin: 'node-b' });
  for (const id of ids.slice(5)) b2.open('u' + (Number(id.slice(2)) % 50), { session: id });
  const w = await b2.connect();
  assert.equal(w.resumed, true);
  await b2.flush();
  await sleep(200);
  await rec.stop();
  const kinds = rec.items.map((e) => `${e.type} ${e.data.session_id}`);
  assert.deepEqual(kinds, gone.map((id) => `session.disconnected ${id}`),
    'only the 5 closed sessions made events (their users keep other sessions)');
  assert.equal((await suite.api.origins()).find((o) => o.origin === 'node-b').sessions, 195);
  await b2.end({ bye: true });
});

test('a kick comes back as `ended`, and the session leaves the list', async (t) => {
  if (skipUnlessSupported(t)) return;
  const b = mk(t, { origin: 'node-c' });
  await b.connect();
  const s = b.open('carol');
  await b.flush();
  const ended = new Promise((r) => b.once('ended', r));
  await suite.api.kick(s);
  const e = await ended;
  assert.equal(e.session, s);
  assert.equal(e.reason, 'kicked');
  assert.equal(b.sessions.has(s), false);
  await b.end({ bye: true });
});

test('a removal by the API comes back as `left`: the channel leaves the list and no re-assert joins it again', async (t) => {
  if (skipUnlessSupported(t)) return;
  // retryMs: time enough to remove a member while the connection is down.
  const b = mk(t, { origin: 'node-rm', retryMs: 600, maxRetryMs: 600 });
  await b.connect();
  const s = b.open('rmuser');
  b.join(s, 'room:rm', { n: 1 });
  b.join(s, 'room:rm2', null);
  await b.flush();
  const lefts = [];
  b.on('left', (e) => lefts.push(e));
  await suite.api.removeFromChannel('room:rm', 'rmuser');
  await waitFor(() => lefts.length === 1, { what: 'the left event', timeout: 3000 });
  assert.deepEqual(lefts[0], { session: s, user: 'rmuser', channel: 'room:rm', reason: 'kicked' });
  assert.deepEqual([...b.sessions.get(s).channels.keys()], ['room:rm2']);
  b.reconnect();                                   // sync, then the joins it still holds
  await waitFor(() => b.connects === 2, { what: 'reconnected' });
  await b.flush();
  assert.equal((await suite.api.channel('room:rm')).count, 0, 'the re-assert did not join it again');
  assert.equal((await suite.api.channel('room:rm2')).count, 1);

  // Removed while the connection is down: told before the next welcome.
  b.reconnect();
  await waitFor(async () => (await suite.api.origins()).find((o) => o.origin === 'node-rm').state === 'detached',
    { what: 'origin detached', timeout: 3000 });
  await suite.api.removeFromChannel('room:rm2', 'rmuser');
  await waitFor(() => b.connects === 3, { what: 'reconnected again' });
  await b.flush();
  assert.deepEqual(lefts.map((e) => e.channel), ['room:rm', 'room:rm2']);
  assert.equal(b.sessions.get(s).channels.size, 0);
  assert.equal((await suite.api.channel('room:rm2')).count, 0, 'the re-assert after the outage did not join it again');
  assert.equal(b.stats.opErrors, 0);
  await b.end({ bye: true });
});

test('trackWebSocketServer: a ws server\'s connections in one call', async (t) => {
  if (skipUnlessSupported(t)) return;
  const b = mk(t, { origin: 'node-ws' });
  await b.connect();
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  trackWebSocketServer(b, wss, (_ws, req) => new URL(req.url, 'http://x').searchParams.get('user'));
  const c = new WebSocket(`ws://127.0.0.1:${wss.address().port}/?user=dora`);
  await new Promise((r) => c.once('open', r));
  await waitFor(async () => (await suite.api.getUser('dora')).status === 'online', { what: 'dora online' });
  c.close();
  await waitFor(async () => (await suite.api.getUser('dora')).status === 'offline', { what: 'dora offline' });
  wss.close();
  await b.end({ bye: true });
});

test('channels through the connection and the API; re-joined after a reconnect without an event', async (t) => {
  if (skipUnlessSupported(t)) return;
  const b = mk(t, { origin: 'node-ch', retryMs: 20 });
  await b.connect();
  const ann = b.open('ann');
  const bob = b.open('bob');
  b.join(ann, 'room:1', { color: 'red' });
  b.join(bob, 'room:1', null);
  b.join(bob, 'room:2', { color: 'blue' });
  await b.flush();
  assert.deepEqual(await suite.api.channel('room:1'), { channel: 'room:1', count: 2 });
  const page = await suite.api.channelMembers('room:1', { limit: 1 });
  assert.equal(page.members[0].user_id, 'ann');
  assert.deepEqual(page.members[0].data, { color: 'red' });
  const all = [];
  for await (const m of suite.api.allChannelMembers('room:1', { limit: 1 })) all.push(m.user_id);
  assert.deepEqual(all, ['ann', 'bob']);
  assert.deepEqual((await suite.api.channels({ prefix: 'room:' })).channels, [{ channel: 'room:1', count: 2, shown_count: 2 }, { channel: 'room:2', count: 1, shown_count: 1 }]);
  assert.deepEqual((await suite.api.userChannels('bob')).map((c) => c.channel).sort(), ['room:1', 'room:2']);
  b.update(ann, 'room:1', { color: 'green' });
  await b.flush();
  assert.deepEqual((await suite.api.channelMembers('room:1')).members[0].data, { color: 'green' });

  const rec = record();
  t.after(() => rec.stop());
  await rec.connected;
  b.reconnect();                                   // sync, then the joins again: nothing changes
  await waitFor(() => b.connects === 2, { what: 'reconnected' });
  await b.flush();
  await sleep(200);
  assert.deepEqual(rec.items.map((e) => e.type), [], 'a re-assert with its joins emits nothing');
  await b.flush();
  // A leave still queued when the connection drops is sent after the re-assert.
  b.leave(ann, 'room:1');
  b.reconnect();
  await waitFor(() => b.connects === 3, { what: 'reconnected again' });
  await b.flush();
  await waitFor(async () => (await suite.api.channel('room:1')).count === 1, { what: 'ann left room:1' });
  assert.equal(b.stats.opErrors, 0);
  await suite.api.removeFromChannel('room:2', 'bob');
  await waitFor(() => rec.items.some((e) => e.type === 'channel.leave' && e.data.reason === 'kicked'), { what: 'channel.leave' });
  const gone = await suite.api.removeFromChannel('room:2', 'bob').catch((e) => e);
  assert.equal(gone.code, 'not_member');
  await rec.stop();
  await b.end({ bye: true });
  assert.equal((await suite.api.channel('room:1')).count, 0);
});

test('HTTP sessions with a TTL (serverless backends): created, renewed, ended by the TTL', async (t) => {
  if (skipUnlessSupported(t)) return;
  const a = await suite.api.putSession('fn-1', { userId: 'fay', ttlMs: 1000, meta: { via: 'lambda' } });
  assert.equal(a.created, true);
  assert.equal(a.user_id, 'fay');
  const b = await suite.api.putSession('fn-1', { userId: 'fay', ttlMs: 1000 });
  assert.equal(b.created, false);
  assert.equal((await suite.api.getUser('fay')).status, 'online');
  assert.ok((await suite.api.origins()).some((o) => o.origin === 'http' && o.sessions === 1));
  // Its device kind, which PUT /v1/sessions takes (the SDK sent none: every one was 'web').
  assert.equal((await suite.api.putSession('fn-3', { userId: 'fay', ttlMs: 1000, device: 'mobile' })).created, true);
  assert.deepEqual(Object.fromEntries((await suite.api.sessions('fay')).map((s) => [s.session_id, s.device])), { 'fn-1': 'web', 'fn-3': 'mobile' });
  const bad = await suite.api.putSession('fn-2', { userId: 'fay', ttlMs: 10 }).catch((e) => e);
  assert.equal(bad.code, 'bad_ttl');
  await waitFor(async () => (await suite.api.getUser('fay')).status === 'offline', { timeout: 5000, what: 'the TTL to lapse' });
});
