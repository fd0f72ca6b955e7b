// SPDX-License-Identifier: MIT
// The event stream over a connection that goes silent without closing (a
// load balancer or NAT that dropped it, a frozen host): presenced writes a
// keepalive every 15 s, so a stream silent for readTimeoutMs is dead; it must
// reconnect and resume, losing and repeating nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceAPI } from '../index.js';
import { Presenced, connectUser, waitFor, relay, API_KEY } from './lib.js';

const pd = new Presenced();
before(() => pd.start());
after(() => pd.stop());

test('a stream gone silent reconnects after readTimeoutMs and resumes: nothing lost, nothing repeated', async (t) => {
  const r = await relay(pd.port);
  t.after(() => r.close());
  const api = new PresenceAPI({ url: r.url, apiKey: API_KEY });
  const errors = [];
  const stream = api.events({ readTimeoutMs: 800, retryMs: 50, onError: (e) => errors.push(e) });
  const items = [];
  const done = (async () => { for await (const e of stream) items.push(e); })();
  t.after(() => stream.close());
  await waitFor(() => stream.connects === 1, { what: 'the stream' });
  const a = await connectUser(pd, 'stall-a');
  await waitFor(() => items.some((e) => e.type === 'user.online'), { what: 'user.online' });
  r.freeze();
  a.close();                                   // its events are written into the frozen connection
  await waitFor(() => items.some((e) => e.type === 'user.offline'), { timeout: 5000, what: 'user.offline after the stall' });
  stream.close();
  await done;
  assert.ok(stream.connects >= 2, 'reconnected');
  assert.ok(errors.length >= 1 && /timeout|silent/i.test(String(errors[0].message)), String(errors[0]));
  const seqs = items.filter((e) => !e.gap).map((e) => e.seq);
  assert.deepEqual(seqs, [...new Set(seqs)].sort((x, y) => x - y), 'in order, none twice');
  assert.deepEqual(items.filter((e) => !e.gap).map((e) => e.type),
    ['session.connected', 'user.online', 'session.disconnected', 'user.offline']);
});

test('a consumer slower than readTimeoutMs is not taken for a dead connection', async (t) => {
  const api = new PresenceAPI({ url: pd.url, apiKey: API_KEY });
  const stream = api.events({ readTimeoutMs: 300, retryMs: 50 });
  t.after(() => stream.close());
  const items = [];
  const done = (async () => {
    for await (const e of stream) {
      items.push(e);
      await new Promise((r) => setTimeout(r, 500));   // applying the event takes a while
      if (items.length === 2) break;
    }
  })();
  await waitFor(() => stream.connects === 1, { what: 'the stream' });
  const a = await connectUser(pd, 'slow-a');
  await done;
  a.close();
  assert.equal(stream.connects, 1, 'no reconnect while the consumer worked');
});

test('a signal aborted before the stream is made ends it at once', async () => {
  const api = new PresenceAPI({ url: pd.url, apiKey: API_KEY });
  const ac = new AbortController();
  ac.abort();                                  // shutting down already
  const stream = api.events({ signal: ac.signal, after: 0 });
  const items = [];
  const t0 = Date.now();
  await Promise.race([(async () => { for await (const e of stream) items.push(e); })(), new Promise((r) => setTimeout(r, 1000))]);
  stream.close();
  assert.deepEqual(items, []);
  assert.equal(stream.connects, 0);
  assert.ok(Date.now() - t0 < 900, 'the iteration ended by itself');
});
