// SPDX-License-Identifier: MIT
// The backend connection against two presenced instances sharing one real
// redis-server: what only a Redis store answers (protocol.md 5.2, 5.4).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BackendConnection, PresenceAPI } from '../index.js';
import { Presenced, startRedis, waitFor, sleep, API_KEY } from './lib.js';

let redis = null;
const pds = [];
before(async () => {
  redis = await startRedis();
  if (!redis) return;
  // A session may be in 2 channels; the store counts those joined through
  // either instance.
  for (let i = 0; i < 2; i++) {
    pds.push(await new Presenced(['--store', redis.store, '--max-channels-per-session', '2',
      '--redis-timeout-ms', '5000']).start());
  }
});
after(async () => {
  for (const pd of pds) await pd.stop();
  if (redis) await redis.stop();
});

function mk(t, pd, origin) {
  const b = new BackendConnection({ url: pd.url, apiKey: API_KEY, origin });
  t.after(() => Promise.race([b.end({ bye: true }).catch(() => {}), sleep(3000)]));
  return b;
}

test('a join the store refuses after its ack is a `left` with reason refused and the code', async (t) => {
  if (!redis) { t.skip('no redis-server'); return; }
  const [A, B] = pds;
  const apiB = new PresenceAPI({ url: B.url, apiKey: API_KEY });
  // Through A: the session in its 2 channels.
  const a = mk(t, A, 'node-jr');
  await a.connect();
  const s = a.open('jr-u', { session: 'node-jr-s1' });
  a.join(s, 'jr-a');
  a.join(s, 'jr-b');
  await a.flush();
  await waitFor(async () => (await apiB.channel('jr-b')).count === 1, { what: 'B sees jr-b', timeout: 5000 });
  await a.end();
  // The origin moves to B, holding the session with a third channel: B's
  // record of the taken-over session has no channel, so B acknowledges the
  // join, and the store, which counts jr-a and jr-b, refuses it.
  const b = mk(t, B, 'node-jr');
  const lefts = [];
  b.on('left', (e) => lefts.push(e));
  b.open('jr-u', { session: s });
  b.join(s, 'jr-c', { x: 1 });
  await b.connect();
  await waitFor(() => lefts.length === 1, { what: 'the left notice', timeout: 5000 });
  const { message, ...rest } = lefts[0];
  assert.deepEqual(rest, { session: s, user: 'jr-u', channel: 'jr-c', reason: 'refused', code: 'too_many_channels' });
  assert.ok(typeof message === 'string' && message, `a message: ${message}`);
  assert.deepEqual([...b.sessions.get(s).channels.keys()], [], 'jr-c left the list');
  assert.equal((await apiB.channel('jr-c')).count, 0);
});
