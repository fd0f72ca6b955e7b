// SPDX-License-Identifier: MIT
// The backend connection's life outside the happy path, against a real
// presenced: what a process without an 'error' listener survives, a second
// process claiming the same origin, and end() while a connection is still
// being opened.
import { test, before, after } from 'node:test';
import net from 'node:net';
import assert from 'node:assert/strict';
import { BackendConnection, PresenceError } from '../index.js';
import { backendSuite, waitFor, sleep, API_KEY, Presenced } from './lib.js';

const suite = backendSuite({ before, after });
const { pd, mk, skipUnlessSupported } = suite;

/** Collects the uncaught exceptions of the process while fn runs. */
async function uncaught(fn) {
  const seen = [];
  const grab = (e) => seen.push(e);
  const listeners = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  process.on('uncaughtException', grab);
  try { await fn(); } finally {
    process.off('uncaughtException', grab);
    for (const l of listeners) process.on('uncaughtException', l);
  }
  return seen;
}

test('without an error listener, a refused frame or a lost origin does not crash the process', async (t) => {
  if (skipUnlessSupported(t)) return;
  // The README's example adds no 'error' listener; Node throws an 'error'
  // event nobody listens to, from inside the socket's message handler.
  const seen = await uncaught(async () => {
    const a = mk(t, { origin: 'node-noerr' });
    await a.connect();
    a._ws.send('{"type":"batch","seq":"x","ops":[]}');   // bad_field: an error frame
    await sleep(200);
    const b = mk(t, { origin: 'node-noerr' });           // takes the origin over: 4009 to a
    await b.connect();
    await sleep(300);
  });
  assert.deepEqual(seen.map((e) => e.message), []);
});

test('end() while a connection is being opened or retried returns at once and leaves nothing open', async (t) => {
  // A presenced that accepts TCP but never answers the upgrade (stopped,
  // overloaded): the attempt stays open; end() must not wait for it.
  const silent = net.createServer((sock) => { held.push(sock); sock.resume(); sock.on('close', () => { sock.gone = true; }); });
  const held = [];
  await new Promise((r) => silent.listen(0, '127.0.0.1', r));
  t.after(() => { for (const s of held) s.destroy(); silent.close(); });
  const b = new BackendConnection({ url: `http://127.0.0.1:${silent.address().port}`, apiKey: API_KEY, origin: 'node-hung' });
  const connecting = b.connect();
  await waitFor(() => held.length === 1, { what: 'the upgrade request' });
  let t0 = Date.now();
  await Promise.race([b.end(), sleep(3000)]);
  assert.ok(Date.now() - t0 < 1000, `end() took ${Date.now() - t0} ms with an attempt open`);
  await assert.rejects(Promise.race([connecting, sleep(1000).then(() => 'pending')]), /ended/);
  await waitFor(() => held[0].gone, { timeout: 2000, what: 'the attempt closed' });

  // Between two attempts (nothing listens): end() does not sit out the delay.
  const gone = new BackendConnection({ url: 'http://127.0.0.1:1', apiKey: API_KEY, origin: 'node-gone', retryMs: 10000 });
  gone.connect().catch(() => {});
  await sleep(300);
  t0 = Date.now();
  await Promise.race([gone.end(), sleep(5000)]);
  assert.ok(Date.now() - t0 < 1000, `end() took ${Date.now() - t0} ms waiting for the next attempt`);
});

test('a connection whose origin another process took over stops, instead of taking it back in a loop', async (t) => {
  if (skipUnlessSupported(t)) return;
  // Two processes started with the same origin (a copied config): each
  // reconnect took the origin back and its sync ended the other's sessions.
  const a = mk(t, { origin: 'node-twice', retryMs: 20 });
  const fatal = [], errors = [];
  a.on('fatal', (e) => fatal.push(e));
  a.on('error', (e) => errors.push(e));
  await a.connect();
  a.open('alice', { session: 'twice-a' });
  await a.flush();
  const b = mk(t, { origin: 'node-twice', retryMs: 20 });
  await b.connect();
  b.open('bob', { session: 'twice-b' });
  await b.flush();
  await sleep(1000);
  assert.deepEqual([a.connects, b.connects], [1, 1], 'connections made by each');
  // The same error in the three SDKs: a PresenceError origin_taken_over, not
  // retryable, told once to 'error' (it was a plain Error, retryable as far
  // as a caller could tell, and 'error' heard it twice: the frame, the close).
  assert.deepEqual(fatal.map((e) => [e instanceof PresenceError, e.code, e.status, e.retryable]),
    [[true, 'origin_taken_over', 0, false]]);
  assert.deepEqual(errors.map((e) => e.code), ['origin_taken_over']);
  await assert.rejects(a.connect(), (e) => e === fatal[0]);
  assert.equal((await suite.api.getUser('bob')).status, 'online');
  a.open('carol');                                    // an app's handler calling in still does not throw
});

test('a status other than online/idle is refused by the SDK, so the next re-assert cannot end the session', async (t) => {
  if (skipUnlessSupported(t)) return;
  // 'away' is an availability, not a session status: presenced refused it,
  // the SDK's list kept it, and the sync after the next reconnect carried it,
  // was refused again and so ended the session (the user went offline).
  const b = mk(t, { origin: 'node-status', retryMs: 20 });
  await b.connect();
  const s = b.open('sue', { session: 'sue-1' });
  await b.flush();
  assert.throws(() => b.setStatus(s, 'away'), TypeError);
  assert.throws(() => b.open('sue', { status: 'dnd' }), TypeError);
  await b.flush();
  b.reconnect();
  await waitFor(() => b.connects === 2, { what: 'the reconnect' });
  await b.flush();
  assert.deepEqual((await suite.api.sessions('sue')).map((x) => [x.session_id, x.status]), [['sue-1', 'online']]);
  assert.equal(b.sessions.get(s).status, 'online');
});

test('a maxOps, retryMs or maxRetryMs that is not a positive number is a TypeError when made', async (t) => {
  // maxOps: 0 spun for ever in the re-assert after the welcome, and NaN
  // (Number() of an unset variable) in the first flush, at 100% CPU.
  for (const o of [{ maxOps: 0 }, { maxOps: NaN }, { maxOps: -5 }, { maxOps: '100' }, { retryMs: NaN }, { retryMs: 0 }, { maxRetryMs: NaN }]) {
    assert.throws(() => new BackendConnection({ url: pd.url, apiKey: API_KEY, origin: 'node-args', ...o }), TypeError, JSON.stringify(o));
  }
  if (skipUnlessSupported(t)) return;
  const b = mk(t, { origin: 'node-args', maxOps: 1.5 });   // a fraction is rounded down, to 1
  await b.connect();
  b.open('ops-a'); b.open('ops-b');
  await b.flush();
  assert.equal(b.stats.opsAcked, 2);
});

test('connect() again after a refusal rejects with that refusal, at once', async (t) => {
  if (skipUnlessSupported(t)) return;
  const b = new BackendConnection({ url: pd.url, apiKey: 'a-wrong-key-0123456789-0123456789', origin: 'node-refused' });
  t.after(() => b.end());
  // A PresenceError with the daemon's message, as the API's errors and the Go SDK's
  // (it was a plain Error: "backend connection refused: 401 unauthorized").
  await assert.rejects(b.connect(), (e) => e instanceof PresenceError && e.code === 'unauthorized' && e.status === 401 &&
    e.retryable === false && e.message === 'unauthorized: missing or wrong API key');
  // A retry loop of the caller's: it must not wait for ever, nor say "ended".
  const again = await Promise.race([b.connect().catch((e) => e), sleep(1000).then(() => 'pending')]);
  assert.equal(again.code, 'unauthorized', String(again && again.message));
});

test('a reserved origin is refused, not retried for ever', async (t) => {
  if (skipUnlessSupported(t)) return;
  // 'http' is the origin of PUT /v1/sessions: presenced answers 409 bad_origin,
  // which connect() retried for ever (it never settled).
  const b = new BackendConnection({ url: pd.url, apiKey: API_KEY, origin: 'http' });
  t.after(() => b.end());
  const e = await Promise.race([b.connect().catch((x) => x), sleep(5000).then(() => 'pending')]);
  assert.ok(e instanceof PresenceError, String(e));
  assert.equal(e.status, 409);
  assert.equal(e.code, 'bad_origin');
});

test('a refusal on a reconnect (presenced restarted with another key) is told to error and fatal, then connect() rejects with it', async (t) => {
  // Go's OnError and Python's on_error hear it; 'error' heard nothing, and
  // an app logging only 'error' (the README's) never learnt it had stopped.
  const pd = new Presenced();
  await pd.start();
  t.after(() => pd.stop());
  const r = await fetch(`${pd.url}/v1/origins`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  if (r.status !== 200) { t.skip('this presenced has no backend session connection'); return; }
  const b = new BackendConnection({ url: pd.url, apiKey: API_KEY, origin: 'node-rotated', retryMs: 20, maxRetryMs: 50 });
  const errors = [], fatal = [];
  b.on('error', (e) => errors.push(e));
  b.on('fatal', (e) => fatal.push(e));
  await b.connect();
  await pd.stop();
  pd.args = ['--api-key', 'a-rotated-key-0123456789-0123456789'];
  await pd.start();
  await waitFor(() => fatal.length === 1, { timeout: 10000, what: 'the refusal' });
  assert.deepEqual([fatal[0].status, fatal[0].code], [401, 'unauthorized']);
  assert.ok(errors.includes(fatal[0]), `'error' heard: ${errors.map((e) => e.code)}`);
  await assert.rejects(b.connect(), (e) => e === fatal[0]);
  await b.end();
});

test('connect() after end() says so, not that it never connected', async (t) => {
  if (skipUnlessSupported(t)) return;
  const b = mk(t, { origin: 'node-ended' });
  await b.connect();
  await b.end({ bye: true });
  await assert.rejects(b.connect(), /end\(\) was called\): make a new one/);
});

test('a refused frame is told to error as a PresenceError with its code, as the Go and Python SDKs tell it', async (t) => {
  if (skipUnlessSupported(t)) return;
  // It was a plain Error with the frame's fields copied on: a code, but no
  // PresenceError to tell it by, and no retryable (Go: an *Error, Python: a
  // PresenceError, both not retryable for a frame no retry heals).
  const a = mk(t, { origin: 'node-frame' });
  const errors = [];
  a.on('error', (e) => errors.push(e));
  await a.connect();
  a._ws.send('{"type":"batch","seq":"x","ops":[]}');   // bad_field: an error frame
  await waitFor(() => errors.length === 1, { what: 'the error event', timeout: 3000 });
  const [e] = errors;
  assert.ok(e instanceof PresenceError, String(e));
  assert.deepEqual([e.code, e.status, e.retryable], ['bad_field', 0, false]);
  assert.match(e.message, /^bad_field: backend frame refused: /);
  assert.equal(new PresenceError(0, 'rate_limited', 'x').retryable, true, 'rate_limited is sent again later');
});
