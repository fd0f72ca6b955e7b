// SPDX-License-Identifier: MIT
// Waits longer than setTimeout can hold (2^31-1 ms, 24.8 days): browsers and
// node run such a timer at once. The client's timers run on the real clock
// here (a fake one would not show it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceClient } from '../presence.js';
import { makeFakeWebSocket, FakeTarget, flush } from './fakes.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function setup(opts = {}) {
  const { FakeWebSocket, sockets } = makeFakeWebSocket();
  let tokens = 0;
  const client = new PresenceClient({
    url: 'ws://example.test/v1/ws', WebSocket: FakeWebSocket,
    getToken: async () => 'tok' + ++tokens,
    window: opts.window ?? null, document: null, pingIntervalMs: 0, ...opts.options,
  });
  return { client, sockets, tokens: () => tokens };
}

test('a token valid for 30 days is refreshed once, ahead of its expiry, not in a loop', async () => {
  const env = setup();
  const events = [];
  env.client.on('token', (t) => events.push(t));
  env.client.connect();
  await flush();
  const ws = env.sockets[0];
  const exp = Math.floor(Date.now() / 1000) + 30 * 86400;
  ws.serverOpen({ exp });
  for (let i = 0; i < 10; i++) {
    await sleep(20);
    // Answer any refresh as presenced would, with a new 30-day expiry.
    for (const m of ws.sent.splice(0)) if (m.type === 'token') ws.serverSend({ type: 'ack', id: m.id, exp: exp + 86400 });
  }
  assert.equal(env.tokens(), 1, 'getToken is called for the connection only');
  assert.equal(events.length, 0, 'no refresh 30 days ahead of the expiry');
  env.client.close();
});

test('an idle timeout longer than setTimeout holds does not spin', async () => {
  const win = new FakeTarget();
  let timers = 0;
  const env = setup({ window: win, options: {
    idle: { timeoutMs: 40 * 86400 * 1000 },
    timers: { setTimeout: (f, ms) => { timers++; return setTimeout(f, ms); }, clearTimeout: (h) => clearTimeout(h), now: () => Date.now() },
  } });
  env.client.connect();
  await flush();
  env.sockets[0].serverOpen();
  await sleep(100);
  assert.equal(env.client.status, 'online');
  assert.ok(timers < 5, `a few timers, not one per millisecond (${timers})`);
  env.client.close();
});
