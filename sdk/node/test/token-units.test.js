// SPDX-License-Identifier: MIT
// Token times are Unix seconds (JWT's NumericDate). A JavaScript caller's
// habit is milliseconds (Date.now()): such an `exp` is ~50,000 years away,
// and presenced (without --jwt-max-lifetime-s, the default) accepts it, so a
// token meant to last an hour never expires. It is refused when minted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mintToken } from '../index.js';
import { Presenced, connectUser, JWT_SECRET } from './lib.js';

const pd = new Presenced();
before(() => pd.start());
after(() => pd.stop());

test('an expiresAt or notBefore in milliseconds is a TypeError naming the unit', async () => {
  const inAnHour = Date.now() + 3600 * 1000;
  assert.throws(() => mintToken({ secret: JWT_SECRET, userId: 'tess', expiresAt: inAnHour }), /seconds/);
  assert.throws(() => mintToken({ secret: JWT_SECRET, userId: 'tess', notBefore: Date.now() }), /seconds/);
  // The same time in seconds is a token presenced takes, expiring when asked.
  const ws = await connectUser(pd, 'tess', { expiresAt: Math.floor(inAnHour / 1000) });
  const welcome = ws.messages.find((m) => m.type === 'welcome');
  assert.equal(welcome.exp, Math.floor(inAnHour / 1000));
  ws.close();
});

test('exp is whole seconds whatever ttlSeconds is; a ttlSeconds that is no number is a TypeError', () => {
  // A fractional ttlSeconds (1.5, or ms / 1000) made a fractional exp, where
  // the Python and Go SDKs mint whole seconds (an integer NumericDate).
  const claims = (t) => JSON.parse(Buffer.from(t.split('.')[1], 'base64url').toString());
  const now = () => 1_700_000_000_250;
  for (const ttlSeconds of [1.5, 2999.999, 90, 1]) {
    const { exp, iat } = claims(mintToken({ secret: JWT_SECRET, userId: 'tess', ttlSeconds, now }));
    assert.ok(Number.isInteger(exp), `ttlSeconds ${ttlSeconds}: exp ${exp}`);
    assert.equal(exp, iat + Math.floor(ttlSeconds));
  }
  assert.ok(Number.isInteger(claims(mintToken({ secret: JWT_SECRET, userId: 'tess', expiresAt: 1_700_003_600.7 })).exp));
  // 0 (no expiry meant) or a negative or sub-second lifetime: dead on arrival,
  // where the Go SDK took 0 for its default hour; refused by the three.
  for (const ttlSeconds of ['3600', NaN, Infinity, 0, -60, 0.5]) {
    assert.throws(() => mintToken({ secret: JWT_SECRET, userId: 'tess', ttlSeconds }), /ttlSeconds must be a number/);
  }
});
