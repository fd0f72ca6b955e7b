// SPDX-License-Identifier: MIT
// verifyWebhook and the receivers with the inputs a user hands them outside
// the Express path: headers as a plain object in their sent casing (AWS
// Lambda, a queue's message), and settings from the environment that are
// missing or not numbers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Readable } from 'node:stream';
import { verifyWebhook, webhookMiddleware, fastifyWebhook, WebhookGuard } from '../index.js';

const SECRET = 'sdk-node-webhook-secret';
const body = JSON.stringify({ instance: 'i1', first_seq: 1, last_seq: 1, events: [{ seq: 1, type: 'user.online' }] });
const signed = (ts) => ({ ts: String(ts), sig: 'v1=' + createHmac('sha256', SECRET).update(ts + '.' + body).digest('hex') });

test('headers in a plain object are found whatever their casing', () => {
  const { ts, sig } = signed(Date.now());
  for (const headers of [
    { 'Presence-Timestamp': ts, 'Presence-Signature': sig },     // as sent (API Gateway, Lambda)
    { 'PRESENCE-TIMESTAMP': ts, 'presence-signature': sig },
  ]) {
    const d = verifyWebhook({ secret: SECRET, headers, body });
    assert.equal(d.events.length, 1, JSON.stringify(Object.keys(headers)));
  }
});

test('a tolerance that is not a finite number is refused, never taken as "any timestamp"', async () => {
  const { ts, sig } = signed(Date.now() - 3600 * 1000);            // an hour old
  const headers = { 'presence-timestamp': ts, 'presence-signature': sig };
  // Number(process.env.UNSET) is NaN, and every comparison with NaN is false.
  // Infinity (or 'Infinity' from the environment) is above every distance:
  // a captured delivery would be valid for ever, as the Python SDK refuses.
  for (const toleranceMs of [NaN, Number(undefined), -1, 'five minutes', null, Infinity, 'Infinity', -Infinity]) {
    assert.throws(() => verifyWebhook({ secret: SECRET, headers, body, toleranceMs }), TypeError, String(toleranceMs));
    assert.throws(() => webhookMiddleware({ secret: SECRET, toleranceMs }), TypeError, String(toleranceMs));
    assert.throws(() => new WebhookGuard({ toleranceMs }), TypeError, String(toleranceMs));
    const app = { addContentTypeParser() {}, post() {} };
    await assert.rejects(fastifyWebhook(app, { secret: SECRET, toleranceMs, onDelivery() {} }), TypeError, String(toleranceMs));
  }
  assert.throws(() => verifyWebhook({ secret: SECRET, headers, body }), (e) => e.code === 'stale');
});

test('a receiver without a secret is refused when it is made, not at each delivery', async () => {
  // process.env.WEBHOOK_SECRET unset: every delivery would fail with 500 and
  // presenced retry it forever.
  assert.throws(() => webhookMiddleware({ secret: undefined }), /secret is required/);
  assert.throws(() => webhookMiddleware({ secret: '' }), /secret is required/);
  const app = { addContentTypeParser() {}, post() {} };
  await assert.rejects(fastifyWebhook(app, { secret: undefined, onDelivery() {} }), /secret is required/);
});

test('a failed handler lets presenced\'s retry bring only that delivery\'s events again, never ones applied before', async () => {
  // Attempt 1 of a batch is applied but its 204 is lost (presenced timed
  // out): presenced sends the batch again, the guard finds only duplicates,
  // and the handler fails on that one. The guard set lastSeq to first_seq-1,
  // so the next retry applied the whole batch a second time.
  const applied = [];
  let failNext = false;
  const mw = webhookMiddleware({ secret: SECRET, onDelivery: (d) => {
    if (failNext) { failNext = false; throw new Error('database down'); }
    applied.push(...d.events.map((e) => e.seq));
  } });
  const batch = JSON.stringify({ instance: 'i9', first_seq: 1, last_seq: 3, events: [{ seq: 1 }, { seq: 2 }, { seq: 3 }] });
  const deliver = async (text) => {
    const ts = String(Date.now() + Math.floor(Math.random() * 1000));   // each attempt signed anew
    const sig = 'v1=' + createHmac('sha256', SECRET).update(ts + '.' + text).digest('hex');
    const req = Object.assign(Readable.from([Buffer.from(text)]), { method: 'POST', headers: { 'presence-timestamp': ts, 'presence-signature': sig } });
    const res = { statusCode: 0, setHeader() {}, end() {} };
    await mw(req, res);
    return res.statusCode;
  };
  assert.equal(await deliver(batch), 204);
  failNext = true;
  assert.equal(await deliver(batch), 500);
  assert.equal(await deliver(batch), 204);
  // A batch overlapping applied events whose handler fails: its retry brings
  // the new ones only.
  const overlap = JSON.stringify({ instance: 'i9', first_seq: 2, last_seq: 5, events: [{ seq: 2 }, { seq: 3 }, { seq: 4 }, { seq: 5 }] });
  failNext = true;
  assert.equal(await deliver(overlap), 500);
  assert.equal(await deliver(overlap), 204);
  assert.deepEqual(applied, [1, 2, 3, 4, 5]);
});

test('presenced\'s retry arriving while the first attempt is still handled is answered 409, not 204 with no events', async () => {
  // presenced gives up on a slow answer after --webhook-timeout-ms and sends
  // the batch again. The guard had marked its events applied, so the retry
  // was answered 204 with none; when the slow first attempt then failed,
  // nothing was left to retry and the batch was lost.
  let release;
  const gate = new Promise((r) => { release = r; });
  const applied = [];
  let calls = 0;
  const mw = webhookMiddleware({ secret: SECRET, onDelivery: async (d) => {
    if (++calls === 1) { await gate; throw new Error('database down'); }
    applied.push(...d.events.map((e) => e.seq));
  } });
  const batch = JSON.stringify({ instance: 'i7', first_seq: 1, last_seq: 2, events: [{ seq: 1 }, { seq: 2 }] });
  let n = 0;
  const deliver = async () => {
    const ts = String(Date.now() + n++);
    const sig = 'v1=' + createHmac('sha256', SECRET).update(ts + '.' + batch).digest('hex');
    const req = Object.assign(Readable.from([Buffer.from(batch)]), { method: 'POST', headers: { 'presence-timestamp': ts, 'presence-signature': sig } });
    const res = { statusCode: 0, body: '', setHeader() {}, end(b) { this.body = b || ''; } };
    await mw(req, res);
    return res;
  };
  const first = deliver();
  await new Promise((r) => setImmediate(r));
  const retry = await deliver();
  assert.equal(retry.statusCode, 409, 'the retry during the first attempt');
  assert.equal(JSON.parse(retry.body).error.code, 'in_progress');
  release();
  assert.equal((await first).statusCode, 500);
  assert.equal((await deliver()).statusCode, 204);
  assert.deepEqual(applied, [1, 2]);
});
