// SPDX-License-Identifier: MIT
// The HTTP API client and the event stream against a real presenced: users,
// sessions, kick, typed errors; a stream that resumes by cursor across a
// reconnect (nothing lost, nothing repeated) and reports gaps.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { PresenceAPI, PresenceError } from '../index.js';
import { Presenced, connectUser, waitFor, freePort, API_KEY } from './lib.js';

const pd = new Presenced(['--log-capacity', '64']);
let api;
before(async () => { await pd.start(); api = new PresenceAPI({ url: pd.url, apiKey: API_KEY }); });
after(() => pd.stop());

/** Read from an iterator until pred(item) holds; returns the items read. */
async function readUntil(it, pred, timeout = 5000) {
  const got = [];
  const t = setTimeout(() => it.return?.(), timeout);
  for (;;) {
    const { value, done } = await it.next();
    if (done) break;
    got.push(value);
    if (pred(value, got)) break;
  }
  clearTimeout(t);
  return got;
}

test('users, sessions and kick', async () => {
  const a = await connectUser(pd, 'alice', { meta: { device: 'web' } });
  const b = await connectUser(pd, 'alice');
  const u = await api.getUser('alice');
  assert.equal(u.status, 'online');
  assert.equal(u.sessions, 2);
  const many = await api.getUsers(['alice', 'nobody', 'zoë,x']);
  assert.deepEqual(many.map((x) => [x.user_id, x.status]), [['alice', 'online'], ['nobody', 'offline'], ['zoë,x', 'offline']]);
  const sessions = await api.sessions('alice');
  assert.deepEqual(sessions.map((s) => s.session_id).sort(), [a.sessionId, b.sessionId].sort());
  await api.kick(a.sessionId);
  assert.equal(await a.closed, 4003);
  await waitFor(async () => (await api.getUser('alice')).sessions === 1, { what: 'one session left' });
  b.close();
  await waitFor(async () => (await api.getUser('alice')).status === 'offline', { what: 'alice offline' });
});

test('errors are PresenceError with the daemon\'s code', async () => {
  const gone = await api.kick('no-such-session').catch((e) => e);
  assert.ok(gone instanceof PresenceError);
  assert.equal(gone.status, 404);
  assert.equal(gone.code, 'no_session');
  const bad = await new PresenceAPI({ url: pd.url, apiKey: 'wrong' }).getUser('a').catch((e) => e);
  assert.equal(bad.code, 'unauthorized');
  assert.equal(bad.status, 401);
  // The event stream's refusals too (a wrong key, a refused cursor), with the daemon's message.
  const stream = async (o, key = API_KEY) => {
    try { for await (const _ of new PresenceAPI({ url: pd.url, apiKey: key }).events(o)) break; } catch (e) { return e; }
    return null;
  };
  for (const [e, status, code] of [[await stream({}, 'wrong'), 401, 'unauthorized'], [await stream({ after: 'abc' }), 400, 'bad_request']]) {
    assert.ok(e instanceof PresenceError, `${e && e.name}: ${e && e.message}`);
    assert.equal(e.status, status);
    assert.equal(e.code, code);
    assert.equal(e.retryable, false);
    assert.ok(e.message.length > code.length + 10, e.message);
  }
  const id = await api.getUser('x'.repeat(200)).catch((e) => e);
  assert.equal(id.code, 'bad_user_id');
  // A port nothing listens on (port 1 was taken once by another suite's presenced, run as root).
  const down = await new PresenceAPI({ url: `http://127.0.0.1:${await freePort()}`, apiKey: API_KEY }).health().catch((e) => e);
  assert.equal(down.code, 'network');
  assert.equal(down.retryable, true);
  const many = await api.getUsers(Array.from({ length: 2500 }, (_, i) => 'u' + i));
  assert.equal(many.length, 2500, 'split into requests of 1000');
});

test('the event stream resumes by cursor across reconnects: nothing lost, nothing repeated', async () => {
  const stream = api.events({ retryMs: 50 });
  const it = stream[Symbol.asyncIterator]();
  const first = readUntil(it, (e) => e.type === 'user.online' && e.data.user_id === 'carol');
  await waitFor(() => stream.connects === 1, { what: 'stream connected' });
  const c = await connectUser(pd, 'carol');
  const got = await first;
  assert.deepEqual(got.map((e) => e.type), ['session.connected', 'user.online']);
  const cursor = stream.cursor;
  assert.equal(cursor, String(got[1].seq));
  stream.close();
  await it.return();

  // While nobody reads: carol leaves, dave comes. A stream from the saved cursor sees exactly that.
  c.close();
  await waitFor(async () => (await api.getUser('carol')).status === 'offline', { what: 'carol offline' });
  const d = await connectUser(pd, 'dave');
  const resumed = api.events({ after: cursor });
  const it2 = resumed[Symbol.asyncIterator]();
  const rest = await readUntil(it2, (e) => e.type === 'user.online' && e.data.user_id === 'dave');
  assert.deepEqual(rest.map((e) => `${e.type} ${e.data.user_id}`),
    ['session.disconnected carol', 'user.offline carol', 'session.connected dave', 'user.online dave']);
  assert.equal(rest[0].seq, Number(cursor) + 1, 'starts right after the cursor');
  d.close();
  await it2.return();
});

test('a cursor that left the log, or a presenced restarted, is surfaced as a gap', async () => {
  const old = api.events({ after: 0 });
  // fill the log (capacity 64) past seq 1
  for (let i = 0; i < 20; i++) (await connectUser(pd, 'filler' + i)).close();
  await waitFor(async () => (await api.getUser('filler19')).status === 'offline', { what: 'fillers gone' });
  const it = old[Symbol.asyncIterator]();
  const [g] = await readUntil(it, () => true);
  assert.equal(g.type, 'gap');
  assert.equal(g.data.after, 0);
  assert.ok(g.data.oldest > 1);
  await it.return();

  // A live stream across a restart of presenced: it reconnects by itself, and
  // its cursor (beyond the new log's end) gives a gap, then the new events.
  const errors = [];
  const live = api.events({ retryMs: 50, maxRetryMs: 200, onError: (e) => errors.push(e) });
  const it2 = live[Symbol.asyncIterator]();
  const before = readUntil(it2, (e) => e.type === 'user.online');
  await waitFor(() => live.connects === 1, { what: 'connected' });
  const e1 = await connectUser(pd, 'erin');
  await before;
  e1.close();
  // keep reading (an async generator reads only while asked for an item)
  const afterP = readUntil(it2, (e) => e.type === 'user.online' && e.data.user_id === 'frank', 20000);
  await pd.stop();
  await pd.start();
  await waitFor(() => live.connects === 2, { what: 'stream reconnected' });
  const f = await connectUser(pd, 'frank');
  const after = await afterP;
  const gap = after.find((e) => e.type === 'gap');
  assert.ok(gap, 'a gap after the restart: ' + JSON.stringify(after.map((e) => e.type)));
  assert.ok(after.indexOf(gap) < after.findIndex((e) => e.data.user_id === 'frank'));
  f.close();
  await it2.return();
});

test('a filtered stream\'s cursor moves past the events it skips: no gap on resume after many of them', async () => {
  const stream = api.events({ types: ['user.offline'], retryMs: 50 });
  const it = stream[Symbol.asyncIterator]();
  const first = readUntil(it, (e) => e.data.user_id === 'skip-first');
  await waitFor(() => stream.connects === 1, { what: 'stream connected' });
  (await connectUser(pd, 'skip-first')).close();
  const [seen] = await first;
  assert.equal(seen.type, 'user.offline');
  assert.equal(stream.cursor, String(seen.seq));
  // 80 events the filter skips (session.connected, user.online), more than the log's 64,
  // while the iteration waits for its next item.
  const pending = readUntil(it, () => true, 20000);
  const held = [];
  for (let i = 0; i < 40; i++) held.push(await connectUser(pd, 'skip' + i));
  const newest = seen.seq + 80;
  await waitFor(() => Number(stream.cursor) === newest,
    { timeout: 5000, what: `the cursor moved over the skipped events to ${newest} (it is ${stream.cursor})` });
  stream.close();
  assert.deepEqual(await pending, [], 'nothing is yielded for the skipped events');

  // Resumed from the saved cursor: the next user.offline, not a gap.
  const resumed = api.events({ types: ['user.offline'], after: stream.cursor });
  const it2 = resumed[Symbol.asyncIterator]();
  const next = readUntil(it2, () => true);
  await waitFor(() => resumed.connects === 1, { what: 'resumed stream connected' });
  held[0].close();
  const [item] = await next;
  assert.deepEqual([item.type, item.data.user_id], ['user.offline', 'skip0']);
  await it2.return();
  for (const h of held.slice(1)) h.close();
  await waitFor(async () => (await api.getUser('skip39')).status === 'offline', { what: 'skip users gone' });
});

test('a stream refused by a proxy (not JSON) tells onError the proxy\'s text, as the API calls and the Python and Go streams do', async (t) => {
  // A load balancer in front of a restarting presenced: its own 503 page. The
  // stream said only "event stream: HTTP 503"; getUser said the page's text.
  const proxy = http.createServer((req, res) => { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('no healthy upstream'); });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  t.after(() => proxy.close());
  const api = new PresenceAPI({ url: `http://127.0.0.1:${proxy.address().port}`, apiKey: API_KEY });
  const call = await api.getUser('a').catch((e) => e);
  const errors = [];
  const stream = api.events({ retryMs: 50, onError: (e) => errors.push(e) });
  const done = (async () => { for await (const _ of stream); })();
  await waitFor(() => errors.length > 0, { what: 'the first error' });
  stream.close();
  await done;
  assert.deepEqual([errors[0].code, errors[0].message, errors[0].retryable], ['http_503', call.message, true]);
  assert.match(call.message, /no healthy upstream/);
});
