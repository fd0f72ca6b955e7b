// SPDX-License-Identifier: MIT
// The backend connection over a path that goes silent without closing (a
// NAT or load balancer that forgot it, a frozen presenced host): no FIN or
// RST ever comes, so only pings notice. The SDK must reconnect and
// re-assert before the origin's resume window lapses, as the Go SDK does.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BackendConnection, PresenceAPI } from '../index.js';
import { Presenced, waitFor, relay, API_KEY } from './lib.js';

// A lease of 1.5 s makes the welcome's heartbeat_ms 500 (a third of it).
const pd = new Presenced(['--origin-lease-ms', '1500', '--origin-resume-ms', '6000']);
let supported = false;
before(async () => {
  await pd.start();
  const r = await fetch(`${pd.url}/v1/origins`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  supported = r.status === 200;
});
after(() => pd.stop());

test('a backend connection gone silent is dropped after a heartbeat without pong, and its sessions re-asserted', async (t) => {
  if (!supported) return t.skip('this presenced has no backend session connection');
  const r = await relay(pd.port);
  t.after(() => r.close());
  const b = new BackendConnection({ url: r.url, apiKey: API_KEY, origin: 'node-stall', retryMs: 50 });
  t.after(() => Promise.race([b.end({ bye: true }), new Promise((ok) => setTimeout(ok, 2000))]));
  const errors = [];
  b.on('error', (e) => errors.push(e.message));
  const w = await b.connect();
  assert.equal(w.heartbeat_ms, 500);
  b.open('stella', { session: 'stall-1' });
  await b.flush();
  r.freeze();
  await waitFor(() => b.connects === 2, { timeout: 4000, what: 'a reconnect after the silence' });
  await b.flush();
  // Re-asserted well inside the 6 s resume window: the session is still held.
  const api = new PresenceAPI({ url: pd.url, apiKey: API_KEY });
  assert.deepEqual((await api.sessions('stella')).map((s) => s.session_id), ['stall-1']);
  assert.ok(errors.some((m) => /pong|ping/i.test(m)), errors.join('; '));
});
