// SPDX-License-Identifier: MIT
// presence.channel(): join with data, the snapshot then one change each,
// update, leave, observe, refusals, stale changes, rejoin after a reconnect.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceClient } from '../presence.js';
import { FakeClock, makeFakeWebSocket, flush } from './fakes.js';

function setup() {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  const client = new PresenceClient({
    url: 'ws://example.test/v1/ws', getToken: async () => 'tok', WebSocket: FakeWebSocket,
    timers: clock, random: () => 0.5, window: null, document: null, pingIntervalMs: 0,
  });
  return { clock, sockets, client };
}

async function open(env) {
  await flush();
  const ws = env.sockets[env.sockets.length - 1];
  ws.serverOpen();
  return ws;
}

const snapshot = (id, members, count = members.length) =>
  ({ type: 'channel', channel: 'room', snapshot: true, id, count, more: false, members });
const change = (event, member, count, from = 'online') =>
  ({ type: 'channel', channel: 'room', snapshot: false, event, seq: 1, reason: 'explicit', count, member, from });

test('join sends the data, a snapshot syncs, changes follow', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const room = env.client.channel('room', { data: { name: 'Ann' } });
  const join = ws.sent.find((m) => m.type === 'join');
  assert.deepEqual({ ...join, id: 0 }, { type: 'join', id: 0, channel: 'room', data: { name: 'Ann' } });
  const seen = [];
  for (const e of ['sync', 'join', 'leave', 'update']) room.on(e, (d) => seen.push([e, d]));
  ws.serverSend(snapshot(join.id, [{ user_id: 'me', status: 'online', data: { name: 'Ann' }, since: 1, version: 1 }]));
  assert.equal(room.count, 1);
  assert.deepEqual(room.members().map((m) => m.user_id), ['me']);
  ws.serverSend(change('join', { user_id: 'bob', status: 'online', data: { name: 'Bob' }, version: 1 }, 2, 'offline'));
  ws.serverSend(change('update', { user_id: 'bob', status: 'idle', data: { name: 'Bob' }, version: 2 }, 2));
  ws.serverSend(change('update', { user_id: 'bob', status: 'online', data: null, version: 2 }, 2)); // stale
  assert.equal(room.members().find((m) => m.user_id === 'bob').status, 'idle');
  ws.serverSend(change('leave', { user_id: 'bob', status: 'offline', data: null, version: 3 }, 1));
  assert.deepEqual(seen.map(([e]) => e), ['sync', 'join', 'update', 'leave']);
  assert.equal(seen[1][1].member.data.name, 'Bob');
  assert.equal(seen[3][1].count, 1);
  assert.equal(room.count, 1);
  assert.deepEqual(room.members().map((m) => m.user_id), ['me']);
  // The same name is the same object; update sends our new data.
  assert.equal(env.client.channel('room'), room);
  room.update({ name: 'Ann', typing: true });
  assert.deepEqual(ws.sent.at(-1).data, { name: 'Ann', typing: true });
  assert.equal(ws.sent.at(-1).type, 'update');
  room.leave();
  assert.equal(ws.sent.at(-1).type, 'leave');
  assert.deepEqual(env.client.channels(), []);
});

test('snapshot false: the join asks for no member list; its ack, then the changes', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const room = env.client.channel('room', { data: { name: 'Ann' }, snapshot: false });
  const join = ws.sent.find((m) => m.type === 'join');
  assert.deepEqual({ ...join, id: 0 }, { type: 'join', id: 0, channel: 'room', data: { name: 'Ann' }, snapshot: false });
  const seen = [];
  for (const e of ['sync', 'join', 'error']) room.on(e, (d) => seen.push(e));
  ws.serverSend({ type: 'ack', id: join.id });
  assert.equal(env.client._chanReqs.size, 0);
  ws.serverSend(change('join', { user_id: 'bob', status: 'online', data: { name: 'Bob' }, version: 1 }, 2, 'offline'));
  assert.deepEqual(seen, ['join']);
  assert.deepEqual(room.members().map((m) => m.user_id), ['bob']);
  assert.equal(room.count, 2);
  // An update's ack settles its request too (nothing kept per update).
  room.update({ name: 'Ann', typing: true });
  ws.serverSend({ type: 'ack', id: ws.sent.at(-1).id });
  assert.equal(env.client._chanReqs.size, 0);
  // observe ignores it: an observer is answered by a snapshot
  const lobby = env.client.channel('lobby', { observe: true, snapshot: false });
  assert.equal(ws.sent.at(-1).type, 'observe');
  assert.equal(ws.sent.at(-1).snapshot, undefined);
  assert.ok(lobby);
});

test('a join asked before the session opens is sent on welcome; rejoined after a reconnect', async () => {
  const env = setup();
  const room = env.client.channel('room', { data: { c: 1 } });
  env.client.connect();
  const ws = await open(env);
  assert.deepEqual(ws.types().filter((t) => t === 'join'), ['join']);
  room.update({ c: 2 });
  ws.serverClose(1006);
  env.clock.advance(5000);
  const ws2 = await open(env);
  const j = ws2.sent.find((m) => m.type === 'join');
  assert.deepEqual(j && j.data, { c: 2 }, 'rejoined with the latest data');
  let synced = null;
  room.on('sync', (d) => { synced = d; });
  ws2.serverSend(snapshot(j.id, [{ user_id: 'me', status: 'online', data: { c: 2 }, version: 1 }]));
  assert.equal(synced.count, 1);
});

test('observe sends observe and unobserve; refusals reach the channel', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const lobby = env.client.channel('room', { observe: true });
  const o = ws.sent.at(-1);
  assert.equal(o.type, 'observe');
  assert.throws(() => lobby.update({}));
  const errors = [];
  lobby.on('error', (e) => errors.push(e.code));
  ws.serverSend({ type: 'error', code: 'channel_not_allowed', message: 'no', id: o.id });
  assert.deepEqual(errors, ['channel_not_allowed']);
  lobby.leave();
  assert.equal(ws.sent.at(-1).type, 'unobserve');
});

test('after leave() or a removal the channel counts nobody, as members() lists nobody', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  for (const end of ['leave', 'left']) {
    const room = env.client.channel('room');
    const join = ws.sent.filter((m) => m.type === 'join').at(-1);
    ws.serverSend({ ...snapshot(join.id, [{ user_id: 'me', status: 'online', data: null, since: 1, version: 1 },
      { user_id: 'bob', status: 'online', data: null, since: 1, version: 1 }]), more: true });
    assert.equal(room.count, 2);
    if (end === 'leave') room.leave(); else ws.serverSend({ type: 'left', channel: 'room', reason: 'kicked' });
    assert.deepEqual([room.members(), room.count, room.more], [[], 0, false], end);
  }
});

test('left: a backend removed us', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const room = env.client.channel('room');
  let left = null;
  room.on('left', (d) => { left = d; });
  ws.serverSend({ type: 'left', channel: 'room', reason: 'kicked' });
  assert.deepEqual(left, { reason: 'kicked' });
  assert.deepEqual(env.client.channels(), []);
});

test('invisible: counts are the shown ones; our own hidden changes apply whatever their version', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const room = env.client.channel('room', { data: { n: 1 } });
  const join = ws.sent.find((m) => m.type === 'join');
  // We are invisible: listed to ourselves, not counted (docs/protocol.md 4.1).
  ws.serverSend(snapshot(join.id, [
    { user_id: 'ann', status: 'online', data: null, since: 1, version: 3 },
    { user_id: 'me', status: 'offline', data: { n: 1 }, since: 1, version: 2 }], 1));
  assert.equal(room.count, 1);
  // Our own data change while invisible: sent to our sessions only, "hidden",
  // the version others are shown unmoved.
  ws.serverSend({ ...change('update', { user_id: 'me', status: 'offline', data: { n: 2 }, version: 2 }, 1), hidden: true });
  assert.deepEqual(room.members().find((m) => m.user_id === 'me').data, { n: 2 });
  // Without the flag the same version is stale, as before.
  ws.serverSend(change('update', { user_id: 'ann', status: 'online', data: { x: 1 }, version: 3 }, 1));
  assert.equal(room.members().find((m) => m.user_id === 'ann').data, null);
  // Another member going invisible: a leave-like frame with the count one less.
  ws.serverSend({ ...change('leave', { user_id: 'ann', status: 'offline', data: null, version: 4 }, 0), visibility: true });
  assert.equal(room.count, 0);
  assert.deepEqual(room.members().map((m) => m.user_id), ['me']);
});

test('a malformed snapshot (members not a list) throws nothing out of the socket handler (node: the process died); the channel goes on', async () => {
  const env = setup();
  const errors = [];
  env.client.on('error', (e) => errors.push(e));
  const room = env.client.channel('room');
  env.client.connect();
  const ws = await open(env);
  assert.doesNotThrow(() => ws.serverSend({ ...snapshot(1, []), members: { ann: { user_id: 'ann' } } }));
  assert.ok(errors.every((e) => e.kind === 'protocol'));
  assert.equal(env.client.state, 'open');
  ws.serverSend(change('join', { user_id: 'ann', status: 'online', data: null, version: 1 }, 1));
  assert.deepEqual(room.members().map((m) => m.user_id), ['ann']);
});

test('snapshot false: after a reconnect members() holds only the members seen since the new join', async () => {
  const env = setup();
  const room = env.client.channel('room', { snapshot: false });
  env.client.connect();
  const ws = await open(env);
  ws.serverSend({ type: 'ack', id: ws.sent.find((m) => m.type === 'join').id });
  ws.serverSend(change('join', { user_id: 'bob', status: 'online', data: null, version: 1 }, 2, 'offline'));
  assert.deepEqual(room.members().map((m) => m.user_id), ['bob']);
  // The server restarts; bob does not come back.
  ws.serverClose(1001);
  env.clock.advance(1000);
  const ws2 = await open(env);
  const join = ws2.sent.find((m) => m.type === 'join');
  assert.equal(join.snapshot, false);
  ws2.serverSend({ type: 'ack', id: join.id });
  assert.deepEqual(room.members(), [], 'bob is not known to be here any more');
  ws2.serverSend(change('join', { user_id: 'cat', status: 'online', data: null, version: 1 }, 2, 'offline'));
  assert.deepEqual(room.members().map((m) => m.user_id), ['cat']);
});

test('joins refused join_rate (more than 10 a second at a (re)connect) or store_unavailable are sent again, not given up', async () => {
  const env = setup();
  const errors = [];
  const rooms = Array.from({ length: 12 }, (_, i) => env.client.channel('room:' + i));
  for (const r of rooms) r.on('error', (e) => errors.push(r.name + ':' + e.code));
  env.client.connect();
  const ws = await open(env);
  const joins = ws.sent.filter((m) => m.type === 'join');
  assert.equal(joins.length, 12);
  // presenced takes 10, refuses the rest.
  for (const j of joins.slice(0, 10)) ws.serverSend({ ...snapshot(j.id, []), channel: j.channel });
  for (const j of joins.slice(10)) ws.serverSend({ type: 'error', code: 'join_rate', message: 'at most 10 joins and observes a second', id: j.id });
  const refusedSyncBefore = ws.sent.length;
  env.clock.advance(1000);
  const again = ws.sent.slice(refusedSyncBefore).filter((m) => m.type === 'join').map((m) => m.channel);
  assert.deepEqual(again, ['room:10', 'room:11']);
  // Redis unreachable: joined again later too.
  const j10 = ws.sent.filter((m) => m.channel === 'room:10').at(-1);
  ws.serverSend({ type: 'error', code: 'store_unavailable', message: 'retry', id: j10.id });
  env.clock.advance(1000);
  assert.equal(ws.sent.filter((m) => m.channel === 'room:10').length, 3);
  assert.deepEqual(errors, [], 'nothing to report: the client handles it');
  // Other refusals are reported and not retried.
  const j11 = ws.sent.filter((m) => m.channel === 'room:11').at(-1);
  ws.serverSend({ type: 'error', code: 'channel_not_allowed', message: 'no', id: j11.id });
  env.clock.advance(60000);
  assert.equal(ws.sent.filter((m) => m.channel === 'room:11').length, 2);
  assert.deepEqual(errors, ['room:11:channel_not_allowed']);
  env.client.close();
  assert.equal(env.clock.pending(), 0, 'no retry left behind by close()');
});

test('a long-lived page forgets every channel request once it is answered, its channel left or its connection gone', async () => {
  // Each join, observe and update is kept by id until its answer. A page
  // that joins and leaves rooms for hours kept one entry per request whose
  // answer came for a channel already left, per request cut by a
  // reconnect (its answer never comes) and per update made while
  // disconnected (never sent): the map only grew.
  const env = setup();
  env.client.connect();
  let ws = await open(env);
  for (let i = 0; i < 20; i++) {
    // Left before the snapshot came: the snapshot still comes.
    const room = env.client.channel('room:' + i, { data: { i } });
    const join = ws.sent.at(-1);
    room.leave();
    ws.serverSend({ ...snapshot(join.id, []), channel: room.name });
    ws.serverSend({ type: 'ack', id: ws.sent.at(-1).id });
    // An observed channel left before its snapshot too.
    const lobby = env.client.channel('lobby:' + i, { observe: true });
    const obs = ws.sent.at(-1);
    lobby.leave();
    const unobs = ws.sent.at(-1);
    ws.serverSend({ ...snapshot(obs.id, []), channel: lobby.name });
    ws.serverSend({ type: 'ack', id: unobs.id });
  }
  assert.equal(env.client._chanReqs.size, 0, 'answers of channels already left');
  // A room kept across drops: its join and an update in flight when the
  // connection drops, an update while disconnected.
  const kept = env.client.channel('kept', { data: { n: 0 } });
  for (let i = 1; i <= 20; i++) {
    kept.update({ n: i });
    ws.serverClose(1006);
    kept.update({ n: -i }); // not sent: the rejoin carries it
    env.clock.advance(60000);
    ws = await open(env);
  }
  const join = ws.sent.find((m) => m.type === 'join');
  assert.deepEqual(join.data, { n: -20 });
  assert.equal(env.client._chanReqs.size, 1, 'only the join in flight on this connection');
  ws.serverSend({ ...snapshot(join.id, []), channel: 'kept' });
  assert.equal(env.client._chanReqs.size, 0);
  assert.equal(kept.count, 0);
});

test('an answer to a request of a channel object already left does not reach its successor of the same name', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const first = env.client.channel('room');
  const join1 = ws.sent.at(-1);
  first.leave();
  const leave1 = ws.sent.at(-1);
  const errors = [];
  first.on('error', (e) => errors.push(e.code));
  const second = env.client.channel('room');
  assert.notEqual(second, first);
  const join2 = ws.sent.at(-1);
  const syncs = [];
  second.on('sync', (d) => syncs.push(d.members.map((m) => m.user_id)));
  // The first join's snapshot (from before the leave) and then the second's.
  ws.serverSend(snapshot(join1.id, [{ user_id: 'gone', status: 'online', data: null, since: 1, version: 1 }]));
  ws.serverSend({ type: 'ack', id: leave1.id });
  ws.serverSend(snapshot(join2.id, [{ user_id: 'me', status: 'online', data: null, since: 1, version: 1 }]));
  assert.deepEqual(syncs, [['me']]);
  // A left channel's refusal (join_rate, which a live channel retries) is not reported.
  const third = env.client.channel('other');
  const join3 = ws.sent.at(-1);
  third.on('error', (e) => errors.push(e.code));
  third.leave();
  ws.serverSend({ type: 'error', code: 'join_rate', message: 'slow down', id: join3.id });
  ws.serverSend({ type: 'error', code: 'not_joined', message: 'not joined', id: ws.sent.at(-1).id });
  env.clock.advance(5000);
  assert.equal(ws.sent.filter((m) => m.channel === 'other' && m.type === 'join').length, 1);
  assert.deepEqual(errors, []);
  assert.equal(env.client._chanReqs.size, 0);
});

test('leave() or update() of a channel whose join is waiting to be retried reports no not_joined', async () => {
  // A page that joins many rooms at once (or at a reconnect) gets some joins
  // refused join_rate; the client joins them again a second later. Leaving
  // one of them, or updating its data, in that second was answered
  // not_joined by the server, and the page showed that as an error.
  const env = setup();
  const errors = [];
  env.client.on('error', (e) => errors.push('client:' + e.code));
  env.client.connect();
  const ws = await open(env);
  const rooms = ['a', 'b'].map((n) => env.client.channel(n));
  for (const r of rooms) r.on('error', (e) => errors.push(r.name + ':' + e.code));
  for (const j of ws.sent.filter((m) => m.type === 'join')) ws.serverSend({ type: 'error', code: 'join_rate', message: 'slow down', id: j.id });
  // The server answers what it is sent: not_joined, since neither is joined.
  const answer = () => {
    const m = ws.sent.at(-1);
    ws.serverSend({ type: 'error', code: 'not_joined', message: 'not joined', id: m.id });
  };
  rooms[0].update({ typing: true });
  if (ws.sent.at(-1).type === 'update') answer();
  rooms[1].leave();
  if (ws.sent.at(-1).type === 'leave') answer();
  assert.deepEqual(errors, []);
  env.clock.advance(1000);
  const again = ws.sent.filter((m) => m.type === 'join').slice(2);
  assert.deepEqual(again.map((m) => [m.channel, m.data]), [['a', { typing: true }]], 'the retried join carries the data; b is not joined again');
  ws.serverSend({ ...snapshot(again[0].id, []), channel: 'a' });
  // A plain leave's ack, and a refusal of it, are not reported either.
  rooms[0].leave();
  answer();
  assert.deepEqual(errors, []);
  assert.equal(env.client._chanReqs.size, 0);
});

test('joining (with data) a channel this page observes says so instead of doing nothing', async () => {
  // A lobby page observes room:1 for its count; the user enters the room,
  // channel('room:1', { data }) returned the observer: nothing was joined,
  // nobody saw the user in the room, and nothing said why.
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const obs = env.client.channel('room:1', { observe: true });
  const sent = ws.sent.length;
  assert.throws(() => env.client.channel('room:1', { data: { name: 'Ann' } }), /observed.*leave\(\)/);
  assert.throws(() => env.client.channel('room:1', { observe: false }), /observed.*leave\(\)/);
  assert.equal(ws.sent.length, sent, 'nothing sent');
  assert.equal(env.client.channel('room:1'), obs, 'the same object without options');
  obs.leave();
  const room = env.client.channel('room:1', { data: { name: 'Ann' } });
  assert.equal(ws.sent.at(-1).type, 'join');
  assert.notEqual(room, obs);
});

// A room larger than the server's --channel-page: the snapshot holds the
// first page, with more. The client reads the rest ({"type":"members"}).
const mem = (user_id, version = 1, data = null) => ({ user_id, status: 'online', availability: 'auto', data, since: 5, version });
const bigSnapshot = (id, members, count) => ({ type: 'channel', channel: 'room', snapshot: true, id, count, more: true, members });
const page = (id, members, more) => ({ type: 'channel', channel: 'room', snapshot: false, page: true, id, more, members });
const lastAsk = (ws) => ws.sent.filter((m) => m.type === 'members').at(-1);

test('a snapshot with more: the next pages are read until members() is complete, a sync after each', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const room = env.client.channel('room', { observe: true });
  const syncs = [];
  room.on('sync', (d) => syncs.push([d.members.length, d.more]));
  ws.serverSend(bigSnapshot(ws.sent.at(-1).id, [mem('a'), mem('b')], 5));
  assert.equal(room.more, true);
  const ask1 = lastAsk(ws);
  assert.deepEqual({ ...ask1, id: 0 }, { type: 'members', id: 0, channel: 'room', after: 'b' });
  ws.serverSend(page(ask1.id, [mem('c'), mem('d')], true));
  const ask2 = lastAsk(ws);
  assert.equal(ask2.after, 'd');
  ws.serverSend(page(ask2.id, [mem('e')], false));
  assert.deepEqual(room.members().map((m) => m.user_id), ['a', 'b', 'c', 'd', 'e']);
  assert.equal(room.more, false);
  assert.equal(room.count, 5, 'a page carries no count: the snapshot\'s stays');
  assert.deepEqual(syncs, [[2, true], [4, true], [5, false]]);
  assert.equal(ws.sent.filter((m) => m.type === 'members').length, 2, 'nothing asked after the last page');
  // An answer to no request of ours (an old one) changes nothing.
  ws.serverSend(page(ask1.id, [mem('zz')], true));
  assert.equal(room.members().length, 5);
});

test('pages and changes: a change newer than the page wins, a leave keeps the member out, a join after a leave comes in', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const room = env.client.channel('room', { observe: true });
  const leaves = [];
  room.on('leave', (d) => leaves.push(d.member.user_id));
  ws.serverSend(bigSnapshot(ws.sent.at(-1).id, [mem('a'), mem('b')], 6));
  const ask = lastAsk(ws);
  // Before the page (on Redis a page may have been read before them):
  ws.serverSend(change('update', mem('c', 3, { n: 'new' }), 6));
  ws.serverSend(change('leave', { user_id: 'd', status: 'offline', data: null, version: 4 }, 5));
  ws.serverSend(change('leave', { user_id: 'e', status: 'offline', data: null, version: 2 }, 4));
  ws.serverSend(change('join', mem('e', 1, { n: 'again' }), 5, 'offline'));
  ws.serverSend(change('update', { user_id: 'f', status: 'online', availability: 'auto', data: { n: 'same' }, version: 2 }, 5));
  ws.serverSend(page(ask.id, [mem('c', 2, { n: 'old' }), mem('d', 3), mem('e', 1, { n: 'again' }), { ...mem('f', 2, { n: 'same' }), since: 77 }], false));
  const by = Object.fromEntries(room.members().map((m) => [m.user_id, m]));
  assert.deepEqual(Object.keys(by).sort(), ['a', 'b', 'c', 'e', 'f']);
  assert.deepEqual(by.c.data, { n: 'new' }, 'the page\'s older record does not undo a newer change');
  assert.equal(by.c.version, 3);
  assert.equal(by.d, undefined, 'a member whose leave came first is not brought back by an older page');
  assert.deepEqual(by.e.data, { n: 'again' }, 'a member that left and joined again is in');
  assert.equal(by.f.since, 77, 'the same version: the page adds what the change did not carry');
  assert.deepEqual(leaves, ['d', 'e']);
  // Paging over: a later leave and join of d are plain changes.
  ws.serverSend(change('join', mem('d', 1), 6, 'offline'));
  assert.ok(room.members().some((m) => m.user_id === 'd'));
});

test('allMembers false: the snapshot\'s page only; a page refused store_unavailable is asked again, another refusal is reported', async () => {
  const env = setup();
  env.client.connect();
  const ws = await open(env);
  const one = env.client.channel('one', { observe: true, allMembers: false });
  ws.serverSend({ ...bigSnapshot(ws.sent.at(-1).id, [mem('a')], 9), channel: 'one' });
  assert.equal(ws.sent.filter((m) => m.type === 'members').length, 0);
  assert.equal(one.more, true);
  const room = env.client.channel('room', { observe: true });
  const errors = [];
  room.on('error', (e) => errors.push(e.code));
  ws.serverSend(bigSnapshot(ws.sent.at(-1).id, [mem('a'), mem('b')], 9));
  const ask = lastAsk(ws);
  ws.serverSend({ type: 'error', code: 'store_unavailable', message: 'retry', id: ask.id });
  assert.equal(lastAsk(ws), ask, 'not at once');
  env.clock.advance(60000);
  const again = lastAsk(ws);
  assert.notEqual(again.id, ask.id);
  assert.equal(again.after, 'b', 'the same page asked again');
  assert.deepEqual(errors, []);
  ws.serverSend({ type: 'error', code: 'not_joined', message: 'no', id: again.id });
  env.clock.advance(60000);
  assert.equal(lastAsk(ws), again, 'not asked again');
  assert.deepEqual(errors, ['not_joined']);
  assert.equal(room.more, true, 'members are missing: more says so');
  env.client.close();
  assert.equal(env.clock.pending(), 0);
});

test('a new snapshot (rejoin after a reconnect) starts the pages again; an answer to the old socket\'s page changes nothing', async () => {
  const env = setup();
  env.client.connect();
  let ws = await open(env);
  const room = env.client.channel('room', { observe: true });
  ws.serverSend(bigSnapshot(ws.sent.at(-1).id, [mem('a'), mem('b')], 4));
  const old = lastAsk(ws);
  ws.serverClose(1006);
  env.clock.advance(60000);
  ws = await open(env);
  const obs = ws.sent.find((m) => m.type === 'observe');
  ws.serverSend(bigSnapshot(obs.id, [mem('b'), mem('c')], 4));
  const ask = lastAsk(ws);
  assert.equal(ask.after, 'c');
  ws.serverSend(page(old.id, [mem('x')], false));
  assert.equal(room.members().some((m) => m.user_id === 'x'), false);
  ws.serverSend(page(ask.id, [mem('d')], false));
  assert.deepEqual(room.members().map((m) => m.user_id), ['b', 'c', 'd']);
  assert.equal(room.more, false);
});
