// SPDX-License-Identifier: MIT
// Tokens minted by the SDK are accepted by a real presenced with every claim
// it reads, and refused for the reasons the daemon documents.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mintToken, PresenceAPI } from '../index.js';
import { Presenced, connectUser, API_KEY, JWT_SECRET } from './lib.js';

const pd = new Presenced(['--jwt-audience', 'sdk-tests', '--jwt-issuer', 'sdk-issuer']);
let api;
before(async () => { await pd.start(); api = new PresenceAPI({ url: pd.url, apiKey: API_KEY }); });
after(() => pd.stop());

test('a minted token carries sub, exp, iat, watch, meta, aud, iss, nbf: presenced accepts it and shows meta', async () => {
  const ws = await connectUser(pd, 'zoë', { ttlSeconds: 60, watch: ['bob'], meta: { device: 'phone' }, audience: 'sdk-tests', issuer: 'sdk-issuer', notBefore: Date.now() / 1000 - 5 });
  const [s] = await api.sessions('zoë');
  assert.equal(s.session_id, ws.sessionId);
  assert.deepEqual(s.meta, { device: 'phone' });
  // watch: bob allowed, carol refused by the daemon
  ws.send(JSON.stringify({ type: 'subscribe', users: ['carol'], id: 1 }));
  ws.send(JSON.stringify({ type: 'subscribe', users: ['bob'], id: 2 }));
  await new Promise((r) => setTimeout(r, 200));
  const err = ws.messages.find((m) => m.type === 'error' && m.id === 1);
  assert.equal(err.code, 'not_allowed');
  assert.ok(ws.messages.find((m) => m.type === 'presence' && m.id === 2));
  ws.close();
});

test('presenced refuses an expired token, a wrong audience or issuer, a future nbf and a wrong secret', async () => {
  const refused = async (claims, code) => {
    const e = await connectUser(pd, 'bob', claims).then(() => null, (x) => x);
    assert.ok(e, 'refused');
    assert.equal(e.status, 401);
    assert.equal(JSON.parse(e.body).error.code, code);
  };
  const ok = { audience: 'sdk-tests', issuer: 'sdk-issuer' };
  await refused({ ...ok, expiresAt: Date.now() / 1000 - 10 }, 'token_expired');
  await refused({ ...ok, audience: 'elsewhere' }, 'token_audience');
  await refused({ ...ok, issuer: 'someone-else' }, 'token_issuer');
  await refused({ ...ok, notBefore: Date.now() / 1000 + 3600 }, 'token_not_yet_valid');
  const e = await connectUser(pd, 'bob', ok, 'not-the-secret').then(() => null, (x) => x);
  assert.equal(JSON.parse(e.body).error.code, 'token_signature');
});

test('mintToken refuses what presenced would refuse later', () => {
  assert.throws(() => mintToken({ secret: JWT_SECRET, userId: '' }), TypeError);
  assert.throws(() => mintToken({ secret: '', userId: 'a' }), TypeError);
  assert.throws(() => mintToken({ secret: JWT_SECRET, userId: 'a', watch: 'bob' }), TypeError);
  assert.throws(() => mintToken({ secret: JWT_SECRET, userId: 'a', meta: [1] }), TypeError);
  const t = mintToken({ secret: 'k', userId: 'a', ttlSeconds: 10, now: () => 1_000_000, claims: { device: 'web' } });
  const claims = JSON.parse(Buffer.from(t.split('.')[1], 'base64url'));
  assert.deepEqual(claims, { sub: 'a', exp: 1010, iat: 1000, device: 'web' });
});
