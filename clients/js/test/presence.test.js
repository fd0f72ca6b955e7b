// SPDX-License-Identifier: MIT
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceClient, backoffDelay, connect } from '../presence.js';
import { FakeClock, makeFakeWebSocket, FakeTarget, flush } from './fakes.js';

function setup(opts = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const win = opts.window === null ? null : new FakeTarget();
  const doc = opts.document === null ? null : new FakeTarget();
  let tokens = 0;
  const client = new PresenceClient({
    url: 'ws://example.test/v1/ws',
    getToken: opts.getToken || (async () => 'tok' + ++tokens),
    WebSocket: FakeWebSocket,
    timers: clock,
    random: opts.random || (() => 0.5),
    window: win,
    document: doc,
    idle: opts.idle,
    reconnect: opts.reconnect,
    pingIntervalMs: opts.pingIntervalMs ?? 0,
    pongTimeoutMs: opts.pongTimeoutMs,
    maxMessageBytes: opts.maxMessageBytes,
    tokenRefreshAheadMs: opts.tokenRefreshAheadMs,
  });
  const states = [];
  client.on('state', (s) => states.push(s.state));
  const errors = [];
  client.on('error', (e) => errors.push(e));
  return { clock, sockets, client, states, errors, win, doc };
}

async function opened(env, welcome) {
  await flush();
  const ws = env.sockets[env.sockets.length - 1];
  ws.serverOpen(welcome);
  return ws;
}

test('connect fetches a token, puts it in the query string, reports states', async () => {
  const env = setup();
  env.client.connect();
  assert.equal(env.client.state, 'connecting');
  const ws = await opened(env);
  assert.equal(ws.url, 'ws://example.test/v1/ws?token=tok1');
  assert.equal(env.client.state, 'open');
  assert.equal(env.client.sessionId, 's0');
  assert.equal(env.client.userId, 'me');
  assert.deepEqual(env.states, ['connecting', 'open']);
});

test('url with a query string gets &token=, token is URL-encoded', async () => {
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const c = new PresenceClient({ url: 'ws://h/v1/ws?x=1', getToken: async () => 'a+b/c=', WebSocket: FakeWebSocket, window: null, document: null });
  c.connect();
  await flush();
  assert.equal(sockets[0].url, 'ws://h/v1/ws?x=1&token=a%2Bb%2Fc%3D');
  c.close();
});

test('url as a function: asked before every attempt, the next instance after a drop; no URL is a socket error and a retry', async () => {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const urls = ['ws://one/v1/ws', 'ws://two/v1/ws'];
  const asked = [];
  let give = null;
  const c = new PresenceClient({
    url: ({ attempt }) => { asked.push(attempt); return give !== null ? give : urls[asked.length % 2 === 1 ? 0 : 1]; },
    getToken: async () => 't', WebSocket: FakeWebSocket, timers: clock, random: () => 0.5, window: null, document: null, pingIntervalMs: 0,
  });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  c.connect();
  await flush();
  assert.equal(sockets[0].url, 'ws://one/v1/ws?token=t');
  sockets[0].serverOpen();
  sockets[0].serverClose(1006);
  clock.advance(1000);
  await flush();
  assert.equal(sockets[1].url, 'ws://two/v1/ws?token=t');
  assert.deepEqual(asked, [0, 1]);
  give = '';
  sockets[1].serverClose(1006);
  clock.advance(2000);
  await flush();
  assert.equal(sockets.length, 2, 'no socket without a URL');
  assert.equal(errors.at(-1).kind, 'socket');
  assert.equal(c.state, 'reconnecting');
  c.close();
});

test('a socket that closes before it opens is an error that says where to look (a browser shows only 1006)', async () => {
  const env = setup();
  env.client.connect();
  await flush();
  env.sockets[0].serverClose(1006);
  const e = env.errors.at(-1);
  assert.equal(e && e.kind, 'socket');
  assert.equal(e.code, 1006);
  assert.match(e.message, /could not connect to ws:\/\/example\.test\/v1\/ws: closed before the WebSocket opened/);
  assert.match(e.message, /403 for an Origin not in its --allowed-origins/);
  assert.doesNotMatch(e.message, /token=/, 'the token is not in the message');
  // A socket that opened and closed later is not that.
  env.clock.advance(1000);
  await flush();
  const n = env.errors.length;
  env.sockets[1].serverOpen();
  env.sockets[1].serverClose(1006);
  assert.equal(env.errors.length, n);
  env.client.close();
});

test('constructor validates its options', () => {
  assert.throws(() => new PresenceClient({}), /getToken/);
  assert.throws(() => new PresenceClient({ getToken: async () => 't', url: 'ws://x', WebSocket: 42 }), /WebSocket/);
});

test('subscribe sends after welcome, snapshot and changes reach callbacks and get()/all()', async () => {
  const env = setup();
  const seen = [];
  env.client.subscribe(['bob', 'carol'], (u, ch) => seen.push([u.user_id, u.status, ch.snapshot]));
  env.client.connect();
  const ws = await opened(env);
  assert.deepEqual(ws.sent.map((m) => [m.type, m.users]), [['subscribe', ['bob', 'carol']]]);
  ws.serverSend({ type: 'presence', snapshot: true, id: ws.sent[0].id, users: [
    { user_id: 'bob', status: 'online', since: 1, last_seen: 1, version: 3 },
    { user_id: 'carol', status: 'offline', since: 0, last_seen: 0, version: 0 }] });
  ws.serverSend({ type: 'presence', snapshot: false, users: [
    { user_id: 'bob', status: 'idle', from: 'online', reason: 'inactivity', since: 5, last_seen: 5, version: 4, seq: 9 }] });
  assert.deepEqual(seen, [['bob', 'online', true], ['carol', 'offline', true], ['bob', 'idle', false]]);
  assert.equal(env.client.get('bob').status, 'idle');
  assert.equal(env.client.get('bob').version, 4);
  assert.equal(env.client.get('nobody'), undefined);
  assert.deepEqual(env.client.all().map((u) => u.user_id).sort(), ['bob', 'carol']);
  // get() returns a copy
  env.client.get('bob').status = 'x';
  assert.equal(env.client.get('bob').status, 'idle');
});

test('stale changes (older version) are ignored; a snapshot always replaces', async () => {
  const env = setup();
  env.client.subscribe('bob', () => {});
  env.client.connect();
  const ws = await opened(env);
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', since: 1, last_seen: 1, version: 5 }] });
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', status: 'offline', since: 1, last_seen: 1, version: 4 }] });
  assert.equal(env.client.get('bob').status, 'online');
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'idle', since: 1, last_seen: 1, version: 1 }] });
  assert.equal(env.client.get('bob').status, 'idle');
});

test('subscribing again sends only new ids and replays known state to the new callback', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  env.client.subscribe(['bob']);
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', since: 1, last_seen: 1, version: 1 }] });
  const got = [];
  env.client.subscribe(['bob', 'dave'], (u) => got.push(u.user_id + ':' + u.status));
  assert.deepEqual(ws.sent.map((m) => m.users), [['bob'], ['dave']]);
  assert.deepEqual(got, ['bob:online']);
});

test('unsubscribe: per callback, then on the wire when nobody is left; returned undo works', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  const a = () => {}; const b = () => {};
  env.client.subscribe(['bob'], a);
  const undo = env.client.subscribe(['bob', 'carol'], b);
  env.client.unsubscribe(['bob'], a);
  assert.deepEqual(ws.types(), ['subscribe', 'subscribe']);
  undo();
  assert.deepEqual(ws.sent[2], { type: 'unsubscribe', id: ws.sent[2].id, users: ['bob', 'carol'] });
  assert.deepEqual(env.client.watched(), []);
  // Presence for an unwatched user is dropped.
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', status: 'online', version: 9 }] });
  assert.equal(env.client.get('bob'), undefined);
});

test('the undo of a subscribe() without callback releases only that call: other callers keep their users and callbacks', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  const seen = [];
  const stopA = env.client.subscribe(['bob'], (u) => seen.push(u.status));
  const stopB = env.client.subscribe(['bob', 'carol']); // listens through 'presence' events
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', version: 1 }, { user_id: 'carol', status: 'offline', version: 0 }] });
  stopB();
  assert.deepEqual(env.client.watched(), ['bob'], 'carol was only B\'s');
  assert.deepEqual(ws.sent.slice(-1)[0].users, ['carol'], 'only carol unsubscribed on the wire');
  ws.serverSend({ type: 'presence', snapshot: false, users: [{ user_id: 'bob', change: 'status', status: 'idle', version: 2 }] });
  assert.deepEqual(seen, ['online', 'idle'], 'A\'s callback still called');
  // And the other way round: A's undo leaves bob to a callback-less subscribe.
  const stopC = env.client.subscribe(['bob']);
  stopA();
  assert.deepEqual(env.client.watched(), ['bob']);
  assert.equal(env.client.get('bob').status, 'idle');
  stopC();
  assert.deepEqual(env.client.watched(), []);
  assert.deepEqual(ws.sent.slice(-1)[0].users, ['bob']);
});

test('one user the token does not allow no longer leaves every other watched user unwatched (presenced refuses the whole list)', async () => {
  const env = setup({ reconnect: { initialDelayMs: 100, jitter: 0 } });
  const ids = ['a', 'b', 'carol', 'd', 'e', 'f', 'g', 'h'];
  env.client.subscribe(ids.slice(0, 4));
  env.client.subscribe(ids.slice(4));
  env.client.connect();
  // presenced: a subscribe naming carol is refused whole; any other is answered by its snapshot.
  const serve = (ws) => {
    let n = 0;
    for (;;) {
      const pending = ws.sent.filter((m) => m.type === 'subscribe').slice(n);
      if (!pending.length) break;
      n += pending.length;
      for (const m of pending) {
        if (m.users.includes('carol')) ws.serverSend({ type: 'error', code: 'not_allowed', message: 'token does not allow watching carol', id: m.id });
        else ws.serverSend({ type: 'presence', snapshot: true, id: m.id, users: m.users.map((u) => ({ user_id: u, status: 'online', version: 1 })) });
      }
      env.clock.advance(1000); // the halves asked again
    }
    return n;
  };
  for (let round = 0; round < 2; round++) { // the first connection, then after a reconnect
    const ws = await opened(env);
    const sent = serve(ws);
    assert.deepEqual(env.client.all().map((u) => u.user_id).sort(), ids.filter((u) => u !== 'carol'));
    assert.ok(sent <= 7, `${sent} subscribe messages`);
    const refused = env.errors.filter((e) => e.code === 'not_allowed');
    assert.equal(refused.length, round + 1, 'carol reported once per connection');
    assert.deepEqual(refused.at(-1).users, ['carol']);
    assert.deepEqual(env.client.watched().sort(), [...ids].sort(), 'carol stays watched (another token may allow her)');
    ws.serverClose(1006);
    env.clock.advance(100);
  }
});

test('a snapshot naming users not_allowed (presenced answers per user): the others are watched, the refused reported once, nothing sent again', async () => {
  const env = setup();
  env.client.subscribe(['bob', 'carol', 'dan']);
  env.client.connect();
  const ws = await opened(env);
  const sub = ws.sent.filter((m) => m.type === 'subscribe');
  assert.equal(sub.length, 1);
  ws.serverSend({ type: 'presence', snapshot: true, id: sub[0].id, not_allowed: ['carol'],
    users: [{ user_id: 'bob', status: 'online', version: 1 }, { user_id: 'dan', status: 'idle', version: 2 }] });
  env.clock.advance(1000);
  assert.deepEqual(env.client.all().map((u) => [u.user_id, u.status]).sort(), [['bob', 'online'], ['dan', 'idle']]);
  const refused = env.errors.filter((e) => e.code === 'not_allowed');
  assert.equal(refused.length, 1);
  assert.deepEqual([refused[0].kind, refused[0].users, refused[0].id], ['server', ['carol'], sub[0].id]);
  assert.equal(ws.sent.filter((m) => m.type === 'subscribe').length, 1, 'no halves asked again');
  assert.deepEqual(env.client.watched().sort(), ['bob', 'carol', 'dan'], 'carol stays watched (another token may allow her)');
});

test('an id presenced could never hold is left out of subscribe and reported, not sent to refuse the whole list', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  const bad = ['x'.repeat(129), 'tab\there', 'nel\u0085', 'lone\ud800', '\u00e9'.repeat(65)];
  const good = ['bob', '\u00e9'.repeat(64), 'emoji\ud83d\ude00', 'x'.repeat(128)];
  env.client.subscribe([good[0], ...bad, ...good.slice(1)]);
  assert.deepEqual(ws.sent.map((m) => m.users), [good]);
  assert.deepEqual(env.client.watched(), good);
  const e = env.errors.at(-1);
  assert.deepEqual([e.code, e.users], ['bad_user_id', bad]);
});

test('long subscribe lists are split under maxMessageBytes', async () => {
  const env = setup({ maxMessageBytes: 1000 });
  env.client.connect();
  const ws = await opened(env);
  const ids = Array.from({ length: 300 }, (_, i) => 'user-' + String(i).padStart(4, '0'));
  env.client.subscribe(ids);
  assert.ok(ws.sent.length > 1);
  for (const m of ws.sent) assert.ok(JSON.stringify(m).length <= 1000, 'message too large');
  assert.deepEqual(ws.sent.flatMap((m) => m.users), ids);
});

test('subscribe and unsubscribe lists are split by UTF-8 bytes, as the server counts them: non-ASCII ids too', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  // 900 ids (under --max-watch 1000) of 42 CJK characters: 118 bytes each (ids may be 128).
  const ids = Array.from({ length: 900 }, (_, i) => '用户' + String(i).padStart(4, '0') + '的名字'.repeat(12));
  env.client.subscribe(ids);
  env.client.unsubscribe(ids);
  assert.deepEqual(ws.sent.filter((m) => m.type === 'subscribe').flatMap((m) => m.users), ids);
  assert.deepEqual(ws.sent.filter((m) => m.type === 'unsubscribe').flatMap((m) => m.users), ids);
  for (const m of ws.sent) assert.ok(Buffer.byteLength(JSON.stringify(m)) <= 32768, m.type + ' of ' + Buffer.byteLength(JSON.stringify(m)) + ' bytes: over maxMessageBytes, the server\'s 64 KiB frame limit too');
});

test('setStatusIdle/setStatusOnline send status only on change, and are sticky across idle detection', async () => {
  const env = setup({ idle: { timeoutMs: 1000 } });
  env.client.connect();
  const ws = await opened(env);
  const statuses = [];
  env.client.on('status', (s) => statuses.push(s.status));
  env.client.setStatusIdle();
  env.client.setStatusIdle();
  assert.deepEqual(ws.sent.map((m) => m.status), ['idle']);
  // Activity does not undo an explicit idle.
  env.clock.advance(5000);
  env.win.dispatch('keydown');
  assert.equal(env.client.status, 'idle');
  env.client.setStatusOnline();
  assert.deepEqual(ws.sent.map((m) => m.status), ['idle', 'online']);
  assert.deepEqual(statuses, ['idle', 'online']);
});

test('status set before connecting is applied after welcome', async () => {
  const env = setup();
  env.client.setStatusIdle();
  env.client.connect();
  const ws = await opened(env);
  assert.deepEqual(ws.sent[0], { type: 'status', id: ws.sent[0].id, status: 'idle' });
});

test('an idle tab (re)connects with status=idle in the URL, a string URL or a function\'s', async () => {
  const env = setup({ idle: { timeoutMs: 5000 } });
  env.client.connect();
  let ws = await opened(env);
  assert.equal(ws.url, 'ws://example.test/v1/ws?token=tok1', 'online: no status in the URL');
  env.clock.advance(6000);
  assert.equal(env.client.status, 'idle');
  ws.serverClose(1006);
  env.clock.advance(2000);
  await flush();
  ws = env.sockets.at(-1);
  assert.equal(ws.url, 'ws://example.test/v1/ws?status=idle&token=tok2', 'idle by detection: status=idle');
  ws.serverOpen();
  // Sent again after the welcome: nothing on a server that opened it idle,
  // and right on one that ignored the parameter.
  assert.deepEqual(ws.sent.filter((m) => m.type === 'status').map((m) => m.status), ['idle']);
  env.win.dispatch('keydown');
  assert.equal(env.client.status, 'online');
  ws.serverClose(1006);
  env.clock.advance(2000);
  await flush();
  assert.equal(env.sockets.at(-1).url, 'ws://example.test/v1/ws?token=tok3', 'active again: no status');
  env.client.close();

  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const c = new PresenceClient({ url: async () => 'ws://two/v1/ws?x=1', getToken: async () => 't', WebSocket: FakeWebSocket, window: null, document: null });
  c.setStatusIdle();
  c.connect();
  await flush();
  assert.equal(sockets[0].url, 'ws://two/v1/ws?x=1&status=idle&token=t', 'set idle, url a function with a query');
  c.close();
});

test('idle detection: idle after the timeout without activity, online on activity, throttled', async () => {
  const env = setup({ idle: { timeoutMs: 1500, throttleMs: 1000 } });
  env.client.connect();
  const ws = await opened(env);
  env.clock.advance(1000);
  env.win.dispatch('pointermove'); // resets the countdown
  env.clock.advance(1000);
  assert.equal(env.client.status, 'online');
  env.clock.advance(600);
  assert.equal(env.client.status, 'idle');
  assert.equal(env.client.autoIdle, true);
  assert.deepEqual(ws.sent.map((m) => m.status), ['idle']);
  for (let i = 0; i < 200; i++) env.win.dispatch('pointermove');
  assert.equal(env.client.status, 'online');
  assert.deepEqual(ws.sent.map((m) => m.status), ['idle', 'online'], 'one message, not one per mouse move');
  // The idle timer is not re-armed per event: only a handful of timers exist.
  assert.ok(env.clock.pending() <= 2);
  env.clock.advance(1600);
  assert.equal(env.client.status, 'idle');
});

test('every activity kind counts', async () => {
  for (const kind of ['keydown', 'pointerdown', 'pointermove', 'touchstart', 'scroll', 'wheel']) {
    const env = setup({ idle: { timeoutMs: 100 } });
    env.client.connect();
    await opened(env);
    env.clock.advance(200);
    assert.equal(env.client.status, 'idle');
    env.win.dispatch(kind);
    assert.equal(env.client.status, 'online', kind);
    env.client.close();
  }
});

test('idle when hidden (option), back online when visible', async () => {
  const env = setup({ idle: { timeoutMs: 60000, whenHidden: true } });
  env.client.connect();
  const ws = await opened(env);
  env.doc.hidden = true;
  env.doc.dispatch('visibilitychange');
  assert.equal(env.client.status, 'idle');
  env.win.dispatch('scroll'); // ignored while hidden
  assert.equal(env.client.status, 'idle');
  env.doc.hidden = false;
  env.doc.dispatch('visibilitychange');
  assert.equal(env.client.status, 'online');
  assert.deepEqual(ws.sent.map((m) => m.status), ['idle', 'online']);
});

test('hidden page without whenHidden stays online', async () => {
  const env = setup({ idle: { timeoutMs: 60000 } });
  env.client.connect();
  await opened(env);
  env.doc.hidden = true;
  env.doc.dispatch('visibilitychange');
  assert.equal(env.client.status, 'online');
});

test('idle: false disables detection, close() removes every listener', async () => {
  const env = setup({ idle: false });
  env.client.connect();
  await opened(env);
  env.clock.advance(10 * 60000);
  assert.equal(env.client.status, 'online');
  const env2 = setup({ idle: { timeoutMs: 1000, whenHidden: true } });
  env2.client.connect();
  assert.ok(env2.win.count() >= 6);
  env2.client.close();
  assert.equal(env2.win.count(), 0);
  assert.equal(env2.doc.count(), 0);
});

test('no window (node, or window: null): idle detection is off, the session stays online', async () => {
  const env = setup({ window: null, document: null });
  env.client.connect();
  const ws = await opened(env);
  env.clock.advance(10 * 60000);
  assert.equal(env.client.status, 'online');
  assert.deepEqual(ws.types(), [], 'no status idle sent');
  env.client.setStatusIdle();
  env.client.setStatusOnline();
  env.clock.advance(10 * 60000);
  assert.equal(env.client.status, 'online');
  assert.equal(env.clock.pending(), 0, 'no idle timer left either');
});

test('reconnect: new token each time, re-subscribes and restores idle', async () => {
  const env = setup({ reconnect: { initialDelayMs: 100, jitter: 0 } });
  env.client.subscribe(['bob', 'carol'], () => {});
  env.client.connect();
  const ws1 = await opened(env);
  env.client.setStatusIdle();
  ws1.serverClose(1006);
  assert.equal(env.client.state, 'reconnecting');
  env.clock.advance(100);
  const ws2 = await opened(env);
  assert.equal(ws2.token(), 'tok2');
  assert.deepEqual(ws2.sent.map((m) => m.type), ['status', 'subscribe']);
  assert.equal(ws2.sent[0].status, 'idle');
  assert.deepEqual(ws2.sent[1].users, ['bob', 'carol']);
  assert.deepEqual(env.states, ['connecting', 'open', 'closed', 'reconnecting', 'connecting', 'open']);
});

test('an online session is not re-sent a status after reconnect', async () => {
  const env = setup({ reconnect: { initialDelayMs: 10, jitter: 0 } });
  env.client.connect();
  const ws1 = await opened(env);
  env.client.setStatusIdle();
  env.client.setStatusOnline();
  ws1.serverClose(1001);
  env.clock.advance(10);
  const ws2 = await opened(env);
  assert.deepEqual(ws2.sent, []);
});

test('backoff grows exponentially with jitter, is capped, and resets after a stable connection', async () => {
  const delays = [];
  const env = setup({ reconnect: { initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5, stableAfterMs: 5000 }, random: () => 1 });
  env.client.on('reconnecting', (d) => delays.push(d.delayMs));
  env.client.connect();
  await flush();
  for (let i = 0; i < 6; i++) {
    env.sockets[env.sockets.length - 1].serverClose(1006);
    env.clock.advance(2000);
    await flush();
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
  // A connection that stays up resets the backoff.
  const ws = await opened(env);
  env.clock.advance(6000);
  ws.serverClose(1006);
  assert.equal(delays.at(-1), 100);
  // A short-lived one does not.
  env.clock.advance(100);
  const ws2 = await opened(env);
  env.clock.advance(100);
  ws2.serverClose(1006);
  assert.equal(delays.at(-1), 200);
});

test('backoffDelay: jitter stays within [base*(1-j), base]', () => {
  for (const r of [0, 0.25, 0.999]) {
    const d = backoffDelay(3, { initialDelayMs: 100, factor: 2, maxDelayMs: 10000, jitter: 0.5 }, () => r);
    assert.ok(d >= 400 && d <= 800, String(d));
  }
  assert.equal(backoffDelay(50, { initialDelayMs: 100, maxDelayMs: 3000, jitter: 0 }), 3000);
});

test('4003 kicked and 4031 too many sessions: no reconnect', async () => {
  for (const [code, err] of [[4003, 'kicked'], [4031, 'too_many_sessions']]) {
    const env = setup({ reconnect: { initialDelayMs: 10 } });
    env.client.connect();
    const ws = await opened(env);
    ws.serverSend({ type: 'error', code: err, message: 'bye' });
    ws.serverClose(code);
    env.clock.advance(60000);
    await flush();
    assert.equal(env.sockets.length, 1, 'no new socket after ' + code);
    assert.equal(env.client.state, 'closed');
    assert.ok(env.errors.some((e) => e.kind === 'server' && e.code === err));
    assert.ok(env.errors.some((e) => e.kind === 'close' && e.code === code));
    assert.equal(env.clock.pending(), 0, 'no timer left behind');
  }
});

test('after a fatal close, connect() from the closed listener connects again', async () => {
  const env = setup();
  let again = true;
  env.client.on('closed', (s) => { if (s.fatal && again) { again = false; env.client.connect(); } });
  env.client.connect();
  const ws = await opened(env);
  ws.serverClose(4003);
  await flush();
  assert.equal(env.sockets.length, 2, 'a new socket');
  env.sockets[1].serverOpen();
  assert.equal(env.client.state, 'open');
});

test('4031 before any welcome is fatal too', async () => {
  const env = setup();
  env.client.connect();
  await flush();
  env.sockets[0].serverSend({ type: 'error', code: 'too_many_sessions', message: 'limit' });
  env.sockets[0].serverClose(4031);
  env.clock.advance(60000);
  await flush();
  assert.equal(env.sockets.length, 1);
});

test('4001 token expired: reconnects promptly with a freshly fetched token', async () => {
  let calls = 0;
  const env = setup({ getToken: async () => 'fresh' + ++calls, reconnect: { initialDelayMs: 50, jitter: 0 } });
  env.client.connect();
  const ws1 = await opened(env);
  // Several failures first, so the backoff has grown.
  ws1.serverClose(1006);
  env.clock.advance(50); await flush();
  env.sockets[1].serverClose(1006);
  env.clock.advance(100); await flush();
  const ws3 = env.sockets[2]; ws3.serverOpen();
  ws3.serverSend({ type: 'error', code: 'token_expired', message: 'token expired' });
  ws3.serverClose(4001);
  env.clock.advance(50);
  await flush();
  assert.equal(env.sockets.length, 4);
  assert.equal(env.sockets[3].token(), 'fresh4');
  assert.equal(calls, 4);
});

test('token provider failure is reported and retried with backoff; null token stops', async () => {
  let n = 0;
  const env = setup({ getToken: async () => { n++; if (n === 1) throw new Error('offline'); return n === 2 ? 'ok' : null; }, reconnect: { initialDelayMs: 10, jitter: 0 } });
  env.client.connect();
  await flush();
  assert.equal(env.errors[0].kind, 'token');
  assert.equal(env.sockets.length, 0);
  env.clock.advance(10);
  await flush();
  assert.equal(env.sockets.length, 1);
  env.sockets[0].serverClose(1006);
  env.clock.advance(20);
  await flush();
  assert.equal(env.client.state, 'closed');
  env.clock.advance(60000);
  await flush();
  assert.equal(env.sockets.length, 1);
});

test('close() is final: sends 1000, no reconnect, no timers', async () => {
  const env = setup({ pingIntervalMs: 1000, idle: { timeoutMs: 1000 } });
  env.client.connect();
  const ws = await opened(env);
  env.client.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: '' });
  assert.equal(env.client.state, 'closed');
  assert.equal(env.clock.pending(), 0);
  env.clock.advance(100000);
  assert.equal(env.sockets.length, 1);
});

test('close(1001) in a browser (which refuses that code and keeps the socket open) still closes the socket', async () => {
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  // The browser's WebSocket.close(): InvalidAccessError for a code other than
  // 1000 or 3000-4999, SyntaxError for a reason over 123 bytes; the socket stays open.
  class BrowserLikeWebSocket extends FakeWebSocket {
    close(code, reason) {
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) throw new Error('InvalidAccessError');
      if (reason !== undefined && Buffer.byteLength(reason) > 123) throw new Error('SyntaxError');
      super.close(code, reason);
    }
  }
  const c = new PresenceClient({ url: 'ws://h/v1/ws', getToken: async () => 't', WebSocket: BrowserLikeWebSocket, window: null, document: null, pingIntervalMs: 0 });
  c.connect();
  await flush();
  sockets[0].serverOpen();
  c.close(1001, 'page hidden');
  assert.equal(sockets[0].readyState, 3, 'the socket is closed');
  assert.equal(c.state, 'closed');
  c.connect();
  await flush();
  sockets[1].serverOpen();
  c.close(1000, 'x'.repeat(200));
  assert.equal(sockets[1].readyState, 3);
});

test('close() while fetching the token opens nothing', async () => {
  let release;
  const env = setup({ getToken: () => new Promise((r) => { release = r; }) });
  env.client.connect();
  env.client.close();
  release('t');
  await flush();
  assert.equal(env.sockets.length, 0);
});

test('application ping after silence; pong timeout drops and reconnects', async () => {
  const env = setup({ pingIntervalMs: 1000, pongTimeoutMs: 500, reconnect: { initialDelayMs: 10, jitter: 0 } });
  env.client.connect();
  const ws = await opened(env);
  env.clock.advance(999);
  assert.deepEqual(ws.types(), []);
  env.clock.advance(1);
  assert.deepEqual(ws.types(), ['ping']);
  ws.serverSend({ type: 'pong', id: ws.sent[0].id, ts: 1 });
  env.clock.advance(600);
  assert.equal(env.client.state, 'open');
  // Traffic postpones the next ping.
  ws.serverSend({ type: 'ack', id: 1 });
  env.clock.advance(800);
  assert.deepEqual(ws.types(), ['ping']);
  env.clock.advance(200);
  assert.deepEqual(ws.types(), ['ping', 'ping']);
  // No answer this time.
  env.clock.advance(500);
  assert.equal(ws.closedWith.code, 4000);
  assert.ok(env.errors.some((e) => e.kind === 'timeout'));
  env.clock.advance(10);
  await flush();
  assert.equal(env.sockets.length, 2);
});

test('server error frames become error events; the connection stays open', async () => {
  const env = setup();
  env.client.connect();
  const ws = await opened(env);
  ws.serverSend({ type: 'error', code: 'not_allowed', message: 'token does not allow watching carol', id: 7 });
  ws.serverSend('not json');
  assert.deepEqual(env.errors.map((e) => [e.kind, e.code]), [['server', 'not_allowed'], ['protocol', undefined]]);
  assert.equal(env.client.state, 'open');
});

test('a throwing listener does not break the client', async () => {
  const env = setup();
  env.client.on('open', () => { throw new Error('boom'); });
  env.client.subscribe('bob', () => { throw new Error('boom2'); });
  env.client.connect();
  const ws = await opened(env);
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', version: 1 }] });
  assert.equal(env.client.get('bob').status, 'online');
  assert.ok(env.clock.pending() >= 1); // the errors are rethrown asynchronously
  env.clock.timers.clear();
});

test('the browser coming back online skips the backoff wait', async () => {
  const env = setup({ reconnect: { initialDelayMs: 10000, jitter: 0 } });
  env.client.connect();
  const ws = await opened(env);
  ws.serverClose(1006);
  env.win.dispatch('online');
  await flush();
  assert.equal(env.sockets.length, 2);
});

test('connect() shorthand and default export', async () => {
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const c = connect({ url: 'ws://h/v1/ws', getToken: async () => 't', WebSocket: FakeWebSocket, window: null, document: null, pingIntervalMs: 0 });
  await flush();
  assert.equal(sockets.length, 1);
  c.close();
  const mod = await import('../presence.js');
  assert.equal(mod.default, PresenceClient);
});

test('token refresh in place: ahead of exp through getToken, no reconnect, rescheduled from the new exp', async () => {
  const env = setup();
  const refreshed = [];
  env.client.on('token', (e) => refreshed.push(e.exp));
  env.client.connect();
  const now = () => Math.floor(env.clock.now() / 1000);
  const ws = await opened(env, { exp: now() + 600 }); // 10 min: refresh 60 s before
  env.clock.advance(539000); await flush();
  assert.deepEqual(ws.types().filter((t) => t === 'token'), []);
  env.clock.advance(1000); await flush();
  const sent = ws.sent.filter((m) => m.type === 'token');
  assert.equal(sent.length, 1);
  assert.equal(sent[0].token, 'tok2');
  ws.serverSend({ type: 'ack', id: sent[0].id, exp: now() + 120 }); // 2 min: halfway, 60 s
  assert.deepEqual(refreshed, [now() + 120]);
  env.clock.advance(59000); await flush();
  assert.equal(ws.sent.filter((m) => m.type === 'token').length, 1);
  env.clock.advance(1000); await flush();
  assert.equal(ws.sent.filter((m) => m.type === 'token').length, 2);
  assert.equal(env.sockets.length, 1, 'no reconnect');
  assert.deepEqual(env.states, ['connecting', 'open']);
  env.client.close();
  assert.equal(env.clock.pending(), 0);
});

test('token refresh refused: error of kind token, the old token stands, tried again halfway', async () => {
  const env = setup({ tokenRefreshAheadMs: 10000 });
  env.client.connect();
  const now = () => Math.floor(env.clock.now() / 1000);
  const ws = await opened(env, { exp: now() + 100 });
  env.clock.advance(90000); await flush();
  const t1 = ws.sent.filter((m) => m.type === 'token');
  assert.equal(t1.length, 1);
  ws.serverSend({ type: 'error', code: 'token_user_mismatch', message: 'another user', id: t1[0].id });
  assert.equal(env.errors.at(-1).kind, 'token');
  assert.equal(env.errors.at(-1).code, 'token_user_mismatch');
  env.clock.advance(5000); await flush(); // halfway through the 10 s left
  assert.equal(ws.sent.filter((m) => m.type === 'token').length, 2);
  assert.equal(env.client.state, 'open');
  env.client.close();
});

test('token refresh: the users it unsubscribed are no longer shown with their last state', async () => {
  const env = setup();
  env.client.subscribe(['bob', 'carol']);
  env.client.connect();
  const now = () => Math.floor(env.clock.now() / 1000);
  const ws = await opened(env, { exp: now() + 600 });
  ws.serverSend({ type: 'presence', snapshot: true, users: [{ user_id: 'bob', status: 'online', version: 1 }, { user_id: 'carol', status: 'online', version: 4 }] });
  env.clock.advance(540000); await flush();
  const t1 = ws.sent.filter((m) => m.type === 'token')[0];
  ws.serverSend({ type: 'ack', id: t1.id, exp: now() + 600, unsubscribed: ['carol'] });
  assert.equal(env.client.get('carol'), undefined, 'no change of carol comes any more: her state is unknown');
  assert.deepEqual(env.client.all().map((u) => u.user_id), ['bob']);
  env.client.close();
});

test('token refresh: unsubscribed users are reported; 0 turns refresh off', async () => {
  const env = setup();
  env.client.connect();
  const now = () => Math.floor(env.clock.now() / 1000);
  const ws = await opened(env, { exp: now() + 600 });
  env.clock.advance(540000); await flush();
  const t1 = ws.sent.filter((m) => m.type === 'token')[0];
  ws.serverSend({ type: 'ack', id: t1.id, exp: now() + 600, unsubscribed: ['carol'] });
  assert.deepEqual(env.errors.at(-1).users, ['carol']);
  env.client.close();
  const off = setup({ tokenRefreshAheadMs: 0 });
  off.client.connect();
  const ws2 = await opened(off, { exp: Math.floor(off.clock.now() / 1000) + 600 });
  off.clock.advance(599000); await flush();
  assert.equal(ws2.sent.filter((m) => m.type === 'token').length, 0);
  off.client.close();
});

test('idle.whenHidden: a page connected while hidden (opened in a background tab, reloaded there) opens idle', async () => {
  // The README says the session goes idle as soon as the page is hidden; a
  // page that was hidden from the start (a link opened in a background tab,
  // tabs a browser restores at start) saw no visibilitychange and came
  // online, and stayed so for idle.timeoutMs.
  const env = setup({ idle: { timeoutMs: 60000, whenHidden: true } });
  env.doc.hidden = true;
  env.client.connect();
  assert.equal(env.client.status, 'idle');
  assert.equal(env.client.autoIdle, true);
  const ws = await opened(env);
  assert.equal(new URL(ws.url).searchParams.get('status'), 'idle', 'opens idle: watchers see no online');
  env.doc.hidden = false;
  env.doc.dispatch('visibilitychange');
  assert.equal(env.client.status, 'online');
  assert.deepEqual(ws.sent.filter((m) => m.type === 'status').map((m) => m.status), ['idle', 'online']);
  // Without whenHidden a hidden page opens online, as before.
  const env2 = setup({ idle: { timeoutMs: 60000 } });
  env2.doc.hidden = true;
  env2.client.connect();
  const ws2 = await opened(env2);
  assert.equal(env2.client.status, 'online');
  assert.equal(new URL(ws2.url).searchParams.get('status'), null);
});

test('the browser going offline checks an open connection at once: dropped within pongTimeoutMs, kept if it answers', async () => {
  // An open WebSocket is not closed by the browser's offline event: the
  // page said 'open' until the next ping (25 s of silence) and its pong
  // timeout (10 s) found the connection dead.
  const env = setup({ pingIntervalMs: 25000, pongTimeoutMs: 2000, reconnect: { initialDelayMs: 10000, jitter: 0 } });
  env.client.connect();
  const ws = await opened(env);
  env.win.dispatch('offline');
  assert.deepEqual(ws.types(), ['ping'], 'a ping at once');
  env.win.dispatch('offline'); // one probe at a time
  assert.deepEqual(ws.types(), ['ping']);
  env.clock.advance(2000);
  assert.equal(env.client.state, 'reconnecting');
  assert.ok(env.errors.some((e) => e.kind === 'timeout'));
  // Back online: the backoff wait is skipped, as before.
  env.win.dispatch('online');
  const ws2 = await opened(env);
  // A blip: the connection answers, nothing drops.
  env.win.dispatch('offline');
  assert.deepEqual(ws2.types(), ['ping']);
  ws2.serverSend({ type: 'pong', id: ws2.sent[0].id, ts: 1 });
  env.clock.advance(5000);
  assert.equal(env.client.state, 'open');
  // 'online' while open (the network changed under it) checks it too.
  env.win.dispatch('online');
  assert.deepEqual(ws2.types(), ['ping', 'ping']);
  ws2.serverSend({ type: 'pong', id: ws2.sent[1].id, ts: 2 });
  env.clock.advance(5000);
  assert.equal(env.client.state, 'open');
  assert.equal(env.sockets.length, 2);
  env.client.close();
  assert.equal(env.win.count(), 0, 'close() removes the offline listener too');
});

test('token refresh on a computer whose clock is slow: refreshed ahead of the server\'s expiry, not closed 4001 at it', async () => {
  // exp is on the server's clock. A client 5 min slow counted 10 min and
  // 5 min more before its refresh: the server had closed it (4001) at
  // expiry, and the page reconnected once per token lifetime. The pong's
  // ts (the server's clock) says how far off the client is.
  const env = setup();
  const skewMs = 300000; // the server is 5 min ahead of this computer
  env.client.connect();
  const serverNow = () => env.clock.now() + skewMs;
  const ws = await opened(env, { exp: Math.floor(serverNow() / 1000) + 600 });
  const answerPings = () => {
    for (const m of ws.sent) if (m.type === 'ping' && !m.answered) { m.answered = true; ws.serverSend({ type: 'pong', id: m.id, ts: serverNow() }); }
  };
  answerPings();
  let closedAt = null;
  for (let s = 0; s < 600 && closedAt === null; s++) {
    env.clock.advance(1000); await flush();
    answerPings();
    const t = ws.sent.find((m) => m.type === 'token');
    if (t) { closedAt = s; ws.serverSend({ type: 'ack', id: t.id, exp: Math.floor(serverNow() / 1000) + 600 }); }
  }
  assert.ok(closedAt !== null && closedAt < 600, 'refreshed before the server\'s expiry (at ' + closedAt + ' s of 600)');
  assert.ok(closedAt >= 530, 'and not long before: about 60 s ahead (at ' + closedAt + ' s)');
  env.client.close();
});
