// SPDX-License-Identifier: MIT
// clients/js/presence.js in node (npm `ws` as the WebSocket) against a real
// presenced: subscriptions, status, kick (4003), session limit (4031),
// token expiry (4001) and a server restart.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import net from 'node:net';
import WebSocket from 'ws';
import { PresenceClient } from '../../clients/js/presence.js';
import { Presenced, freePort, waitFor, api, request } from './lib.js';

const SECRET = 'node-client-test-secret-0123456789';
const servers = [];
const clients = [];

after(async () => {
  for (const c of clients) c.close();
  for (const s of servers) await s.stop();
});

async function server(args = []) {
  const s = await new Presenced({ port: await freePort(), args: ['--jwt-secret', SECRET, ...args] }).start();
  servers.push(s);
  return s;
}

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function sign(claims) {
  const head = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return head + '.' + crypto.createHmac('sha256', SECRET).update(head).digest('base64url');
}

function client(srv, sub, opts = {}) {
  const tokens = [];
  const c = new PresenceClient({
    url: 'ws://127.0.0.1:' + srv.port + '/v1/ws',
    WebSocket,
    getToken: async () => { const t = (opts.token || (() => sign({ sub, exp: Math.floor(Date.now() / 1000) + 3600, watch: '*' })))(); tokens.push(t); return t; },
    reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
    window: null,
    document: null,
    ...opts.options,
  });
  c.tokens = tokens;
  const states = [];
  c.on('state', (s) => states.push(s));
  c.states = states;
  clients.push(c);
  return c;
}

const opened = (c) => waitFor(() => c.state === 'open', { timeout: 5000, what: 'open' });

test('subscribe, snapshot, status changes between two node clients', async () => {
  const srv = await server();
  const a = client(srv, 'ann');
  const b = client(srv, 'ben');
  const seen = [];
  b.subscribe(['ann', 'zed'], (u, ch) => seen.push(u.user_id + ':' + u.status + (ch.snapshot ? ':snap' : '')));
  a.connect();
  await opened(a);
  b.connect();
  await opened(b);
  await waitFor(() => b.get('ann')?.status === 'online' && b.get('zed'), { what: 'snapshot' });
  assert.equal(b.get('zed').status, 'offline');
  a.setStatusIdle();
  await waitFor(() => b.get('ann').status === 'idle', { what: 'ann idle' });
  a.setStatusOnline();
  await waitFor(() => b.get('ann').status === 'online', { what: 'ann online' });
  a.close();
  await waitFor(() => b.get('ann').status === 'offline', { what: 'ann offline' });
  assert.ok(b.get('ann').last_seen > 0);
  assert.deepEqual(seen.slice(0, 2).sort(), ['ann:online:snap', 'zed:offline:snap']);
  assert.deepEqual(seen.slice(2), ['ann:idle', 'ann:online', 'ann:offline']);
  b.close();
});

test('kicked by the backend (4003): closed for good, no reconnect', async () => {
  const srv = await server();
  const c = client(srv, 'kim');
  const errors = [];
  c.on('error', (e) => errors.push(e));
  c.connect();
  await opened(c);
  const r = await api(srv.port, 'DELETE', '/v1/sessions/' + encodeURIComponent(c.sessionId));
  assert.equal(r.status, 200, r.body);
  await waitFor(() => c.state === 'closed', { what: 'closed' });
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(c.state, 'closed');
  assert.equal(c.tokens.length, 1, 'no new attempt');
  const closedEv = c.states.find((s) => s.state === 'closed');
  assert.equal(closedEv.code, 4003);
  assert.equal(closedEv.fatal, 'kicked');
  assert.ok(errors.some((e) => e.kind === 'server' && e.code === 'kicked'));
});

test('too many sessions (4031): the extra client stops', async () => {
  const srv = await server(['--max-sessions-per-user', '1']);
  const a = client(srv, 'max');
  a.connect();
  await opened(a);
  const b = client(srv, 'max');
  b.connect();
  await waitFor(() => b.states.some((s) => s.state === 'closed'), { what: 'closed' });
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(b.tokens.length, 1);
  assert.equal(b.states.find((s) => s.state === 'closed').code, 4031);
  assert.equal(a.state, 'open');
  a.close();
});

test('token refresh in place: a 5 s token refreshed ahead of expiry, same session, no 4001, no event', async () => {
  const srv = await server();
  const c = client(srv, 'rita', { token: () => sign({ sub: 'rita', exp: Math.floor(Date.now() / 1000) + 5, watch: '*' }), options: { tokenRefreshAheadMs: 2000 } });
  const w = client(srv, 'rwatch');
  const seen = [];
  w.subscribe('rita', (u, ch) => { if (!ch.snapshot) seen.push(u.status); });
  w.connect();
  await opened(w);
  const refreshed = [];
  c.on('token', (e) => refreshed.push(e.exp));
  c.connect();
  await opened(c);
  await waitFor(() => seen.includes('online'), { what: 'rita online' });
  const first = c.sessionId;
  // Three 5 s tokens in a row: each refreshed about 2.5 s after it began.
  await waitFor(() => refreshed.length >= 3, { timeout: 12000, what: 'three refreshes' });
  assert.equal(c.sessionId, first);
  assert.ok(!c.states.some((s) => s.state === 'closed'), 'never closed');
  assert.deepEqual(seen, ['online'], 'watchers saw nothing after the first online');
  assert.equal(c.tokens.length, 4);
  c.close();
  w.close();
});

test('token expiry (4001): reconnects with a fresh token, status restored', async () => {
  const srv = await server();
  let n = 0;
  // Refresh in place off: this test is about the reconnect at expiry.
  const c = client(srv, 'tess', { token: () => sign({ sub: 'tess', exp: Math.floor(Date.now() / 1000) + (++n === 1 ? 2 : 3600), watch: '*' }), options: { tokenRefreshAheadMs: 0 } });
  const w = client(srv, 'watcher');
  w.subscribe('tess');
  w.connect();
  c.connect();
  await opened(c);
  c.setStatusIdle();
  const first = c.sessionId;
  await waitFor(() => c.states.some((s) => s.state === 'closed' && s.code === 4001), { timeout: 5000, what: 'close 4001' });
  await waitFor(() => c.state === 'open' && c.sessionId !== first, { timeout: 5000, what: 'reopened' });
  assert.equal(c.tokens.length, 2);
  assert.notEqual(c.tokens[0], c.tokens[1]);
  await waitFor(async () => (await api(srv.port, 'GET', '/v1/users/tess')).json?.status === 'idle', { what: 'tess idle again' });
  c.close();
  w.close();
});

test('server restart: reconnects, re-subscribes and restores the roster', async () => {
  const srv = await server();
  const a = client(srv, 'rita');
  const b = client(srv, 'rob');
  a.subscribe(['rob']);
  b.subscribe(['rita']);
  a.connect(); b.connect();
  await waitFor(() => a.get('rob')?.status === 'online' && b.get('rita')?.status === 'online', { what: 'both online' });
  b.setStatusIdle();
  await waitFor(() => a.get('rob')?.status === 'idle', { what: 'rob idle' });
  await srv.stop();
  await waitFor(() => a.state !== 'open' && b.state !== 'open', { what: 'dropped' });
  await srv.start();
  await waitFor(() => a.state === 'open' && b.state === 'open', { timeout: 8000, what: 'reopened' });
  await waitFor(() => a.get('rob')?.status === 'idle' && b.get('rita')?.status === 'online', { timeout: 5000, what: 'roster restored, rob still idle' });
  const r = await request(srv.port, 'GET', '/healthz');
  assert.equal(r.status, 200);
  a.close(); b.close();
});

test('two instances on one Redis: the instance a client is on dies, url() names the other, the client goes on there', async () => {
  // README: url may be a function asked before every attempt. Without it a
  // page knew one instance and waited (backing off) for that one to come
  // back while the other served everyone else.
  const rport = await freePort();
  const redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  try {
    await waitFor(async () => (await new Promise((r) => { const s = net.connect(rport, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); })), { what: 'redis-server' });
    const store = ['--store', 'redis://127.0.0.1:' + rport + '/0', '--heartbeat-ms', '500', '--timeout-ms', '2500'];
    const one = await server(store);
    const two = await server(store);
    const urls = [one, two].map((x) => 'ws://127.0.0.1:' + x.port + '/v1/ws');
    let next = 0;
    const asked = [];
    const a = client(one, 'ann', { options: { url: () => { const u = urls[next++ % urls.length]; asked.push(u); return u; } } });
    const b = client(two, 'ben');
    b.subscribe(['ann']);
    a.subscribe(['ben']);
    a.connect();
    b.connect();
    await opened(a);
    await opened(b);
    assert.equal(asked[0], urls[0]);
    await waitFor(() => b.get('ann')?.status === 'online' && a.get('ben')?.status === 'online', { what: 'both online' });
    const first = a.sessionId;
    await one.stop('SIGKILL');
    await waitFor(() => a.state === 'open' && a.sessionId !== first, { timeout: 8000, what: 'ann open again, on the other instance' });
    assert.equal(asked[asked.length - 1], urls[1]);
    a.setStatusIdle();
    await waitFor(() => b.get('ann')?.status === 'idle', { what: 'ben sees ann idle, through instance two' });
    assert.equal(a.get('ben').status, 'online');
  } finally {
    redis.kill('SIGTERM');
  }
});

test('a page in 12 rooms (more than 10 joins a second): leaving or updating one whose join waits for its retry reports no error', async () => {
  // presenced takes 10 joins a second and refuses the rest join_rate; the
  // client joins those again a second later. Leaving one of them in that
  // second was answered not_joined (an error event the page showed), and an
  // update was refused not_joined on the channel.
  const srv = await server();
  const c = client(srv, 'rooms', { token: () => sign({ sub: 'rooms', exp: Math.floor(Date.now() / 1000) + 3600, channels: '*' }) });
  const errors = [];
  c.on('error', (e) => errors.push('client ' + e.code));
  const rooms = Array.from({ length: 12 }, (_, i) => c.channel('room:' + i, { data: { i } }));
  for (const r of rooms) r.on('error', (e) => errors.push(r.name + ' ' + e.code));
  const synced = new Set();
  for (const r of rooms) r.on('sync', () => synced.add(r.name));
  c.connect();
  await opened(c);
  await waitFor(() => synced.size === 10, { what: 'ten rooms joined' });
  const waiting = rooms.filter((r) => !synced.has(r.name));
  assert.equal(waiting.length, 2);
  waiting[0].update({ i: 'typing' });
  waiting[1].leave();
  await waitFor(() => synced.has(waiting[0].name), { timeout: 5000, what: 'the other waiting room joined' });
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(errors, []);
  const members = async (name) => (await api(srv.port, 'GET', '/v1/channels/' + encodeURIComponent(name) + '/members')).json;
  const m0 = await members(waiting[0].name);
  assert.deepEqual(m0.members.map((m) => [m.user_id, m.data]), [['rooms', { i: 'typing' }]]);
  assert.deepEqual((await members(waiting[1].name)).members, []);
  assert.equal(c._chanReqs.size, 0);
  c.close();
});

test('token refresh on a computer whose clock is 5 min slow: refreshed in place ahead of the server\'s expiry, no 4001', async () => {
  // exp is on the server's clock; the client counted on its own and
  // refreshed minutes after presenced had closed the connection (4001).
  const srv = await server();
  const slow = { now: () => Date.now() - 300000 };
  const c = client(srv, 'sal', {
    token: () => sign({ sub: 'sal', exp: Math.floor(Date.now() / 1000) + 6, watch: '*' }),
    options: { timers: slow },
  });
  const refreshed = [];
  c.on('token', (e) => refreshed.push(e.exp));
  c.connect();
  await opened(c);
  const first = c.sessionId;
  await waitFor(() => refreshed.length >= 2, { timeout: 15000, what: 'two refreshes in place' });
  assert.equal(c.sessionId, first);
  assert.ok(!c.states.some((s) => s.state === 'closed'), 'never closed: ' + JSON.stringify(c.states.filter((s) => s.state === 'closed')));
  c.close();
});

test('a room larger than --channel-page: members() holds every member once the client has read the pages after the snapshot', async () => {
  // A snapshot holds the first --channel-page members (3 here) with more;
  // the client asked for no more, so a page showed 3 of 8 people.
  const srv = await server(['--channel-page', '3']);
  const tok = (sub) => () => sign({ sub, exp: Math.floor(Date.now() / 1000) + 3600, channels: '*', observe: '*' });
  const ids = Array.from({ length: 8 }, (_, i) => 'hall-' + i);
  const members = ids.map((id) => client(srv, id, { token: tok(id) }));
  for (const [i, c] of members.entries()) { c.channel('hall', { data: { i } }); c.connect(); }
  await waitFor(async () => (await api(srv.port, 'GET', '/v1/channels/hall')).json.count === 8, { what: 'eight members' });
  const w = client(srv, 'hall-watch', { token: tok('hall-watch') });
  const hall = w.channel('hall', { observe: true });
  const syncs = [];
  hall.on('sync', (d) => syncs.push([d.members.length, d.more]));
  w.connect();
  await waitFor(() => syncs.length && !hall.more, { what: 'every page read' });
  assert.deepEqual(hall.members().map((m) => m.user_id).sort(), ids);
  assert.deepEqual(hall.members().map((m) => m.data.i).sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(syncs, [[3, true], [6, true], [8, false]]);
  assert.equal(hall.count, 8);
  // Then the changes, as before: one leaves, the list follows.
  members[5].close();
  await waitFor(() => hall.members().length === 7, { what: 'the leave' });
  assert.equal(hall.members().some((m) => m.user_id === 'hall-5'), false);
  for (const c of [...members, w]) c.close();
});

test('Redis, a page read before a member left and joined again arrives after both: the rejoined member stands and its later changes are taken', async () => {
  // protocol.md 4.3: with the Redis store a page read before a change may
  // arrive after it, and a client keeps out of a page a member whose leave
  // came while it read the pages. A member's version starts again at 1 when
  // it joins again: the client let a page's record (version 3, read before
  // the leave) replace the rejoined member (version 1) once the join had
  // come, then dropped its next changes (versions 2, 3) as stale: a browser
  // in a big room showed old data, and a member that had left, for good.
  // A proxy holds the replies of instance two's command connections (not
  // its XREAD, which brings the changes) so that the page answers late.
  const rport = await freePort();
  const redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  let delayMs = 0;
  const proxy = net.createServer((down) => {
    const up = net.connect(rport, '127.0.0.1');
    let reader = false;
    down.on('data', (b) => { if (/XREAD/i.test(b.toString('latin1'))) reader = true; up.write(b); });
    up.on('data', (b) => { if (reader || !delayMs) down.write(b); else setTimeout(() => down.write(b), delayMs); });
    const end = () => { down.destroy(); up.destroy(); };
    down.on('error', end); up.on('error', end); down.on('close', end); up.on('close', end);
  });
  try {
    await waitFor(async () => (await new Promise((r) => { const s = net.connect(rport, '127.0.0.1', () => { s.destroy(); r(true); }); s.on('error', () => r(false)); })), { what: 'redis-server' });
    await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
    const args = ['--channel-page', '3'];
    const one = await server([...args, '--store', 'redis://127.0.0.1:' + rport + '/0']);
    const two = await server([...args, '--store', 'redis://127.0.0.1:' + proxy.address().port + '/0']);
    const tok = (sub) => () => sign({ sub, exp: Math.floor(Date.now() / 1000) + 3600, channels: '*', observe: '*' });
    const ids = Array.from({ length: 8 }, (_, i) => 'rj-' + i);
    const members = ids.map((id) => client(one, id, { token: tok(id) }));
    const rooms = members.map((c, i) => { const ch = c.channel('rj', { data: { i } }); c.connect(); return ch; });
    await waitFor(async () => (await api(one.port, 'GET', '/v1/channels/rj')).json.count === 8, { what: 'eight members' });
    // rj-4, on the first page after the snapshot, at version 3.
    rooms[4].update({ i: 4, n: 1 });
    rooms[4].update({ i: 4, n: 2 });
    const v4 = async () => (await api(one.port, 'GET', '/v1/channels/rj/members')).json.members.find((m) => m.user_id === 'rj-4');
    await waitFor(async () => (await v4())?.version === 3, { what: 'rj-4 at version 3' });

    const w = client(two, 'rj-watch', { token: tok('rj-watch') });
    const hall = w.channel('rj', { observe: true });
    const seen = [];
    hall.on('join', (d) => seen.push('join ' + d.member.user_id));
    hall.on('leave', (d) => seen.push('leave ' + d.member.user_id));
    let pages = 0;
    let paged = false;
    // The answers held from the snapshot on: the page asked after it.
    hall.on('sync', (d) => { pages++; if (!d.more) paged = true; if (pages === 1) delayMs = 1500; });
    w.connect();
    await waitFor(() => pages === 1, { timeout: 8000, what: 'the snapshot' });
    // The page after it is asked for now; Redis reads it at once, its
    // answer is held. Meanwhile rj-4 leaves and joins again.
    await new Promise((r) => setTimeout(r, 200));
    rooms[4].leave();
    await waitFor(() => seen.includes('leave rj-4'), { what: 'the leave, before the page' });
    rooms[4] = members[4].channel('rj', { data: { i: 4, n: 'back' } });
    await waitFor(() => seen.includes('join rj-4'), { what: 'the join again, before the page' });
    assert.equal(paged, false, 'the page was to come after the leave and the join (the proxy held it)');
    delayMs = 0;
    await waitFor(() => paged, { timeout: 8000, what: 'every page read' });
    const at = () => hall.members().find((m) => m.user_id === 'rj-4');
    assert.deepEqual(at()?.data, { i: 4, n: 'back' }, 'the page read before the leave does not replace the member that joined again');
    rooms[4].update({ i: 4, n: 'later' });
    await waitFor(() => at()?.data?.n === 'later', { what: 'rj-4\'s change after its rejoin' });
    rooms[4].leave();
    await waitFor(() => !at(), { what: 'rj-4\'s leave after its rejoin' });
    assert.deepEqual(hall.members().map((m) => m.user_id).sort(), ids.filter((id) => id !== 'rj-4'));
    for (const c of [...members, w]) c.close();
  } finally {
    proxy.close();
    redis.kill('SIGTERM');
  }
});
