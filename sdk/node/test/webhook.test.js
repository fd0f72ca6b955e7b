// SPDX-License-Identifier: MIT
// Webhooks from a real presenced into Express, Fastify and node:http
// receivers through the SDK: verified deliveries pass; a forged, stale or
// replayed request is refused; a batch sent again is not applied twice.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac } from 'node:crypto';
import express from 'express';
import Fastify from 'fastify';
import { webhookMiddleware, fastifyWebhook, verifyWebhook, WebhookGuard, WebhookError } from '../index.js';
import { Presenced, connectUser, freePort, waitFor } from './lib.js';

const SECRET = 'sdk-node-webhook-secret-0123456789';
const got = { express: [], fastify: [], node: [] };
const captured = [];      // raw requests that reached the Express receiver
let failNext = 1;          // the node:http receiver fails its first delivery
let nodeAttempts = 0;
let ex, fa, nd, pd, ports;

before(async () => {
  ports = { express: await freePort(), fastify: await freePort(), node: await freePort() };
  const app = express();
  app.post('/hook', express.raw({ type: '*/*' }), (req, _res, next) => {
    captured.push({ headers: { ...req.headers }, body: Buffer.from(req.body) });
    next();
  }, webhookMiddleware({ secret: SECRET }), (req, res) => {
    got.express.push(...req.presence.events);
    res.sendStatus(204);
  });
  ex = app.listen(ports.express, '127.0.0.1');

  fa = Fastify();
  fa.get('/other', async () => ({ ok: true }));
  await fa.register(fastifyWebhook, { path: '/hook', secret: SECRET, onDelivery: (d) => { got.fastify.push(...d.events); } });
  await fa.listen({ port: ports.fastify, host: '127.0.0.1' });

  const mw = webhookMiddleware({ secret: SECRET, onDelivery: (d) => {
    nodeAttempts++;
    if (failNext-- > 0) throw new Error('database down');
    got.node.push(...d.events);
  } });
  nd = http.createServer((req, res) => mw(req, res));
  await new Promise((r) => nd.listen(ports.node, '127.0.0.1', r));

  const hook = (name, port) => ['--webhook', `url=http://127.0.0.1:${port}/hook,secret=${SECRET},name=${name}`];
  pd = new Presenced([...hook('express', ports.express), ...hook('fastify', ports.fastify), ...hook('node', ports.node),
    '--webhook-batch-ms', '10', '--webhook-retry-min-ms', '50', '--webhook-retry-max-ms', '100']);
  await pd.start();
});
after(async () => { await pd.stop(); ex.close(); await fa.close(); nd.close(); });

test('Express, Fastify and node:http receivers get every event, verified, once', async () => {
  const a = await connectUser(pd, 'alice');
  a.close();
  const want = ['session.connected', 'user.online', 'session.disconnected', 'user.offline'];
  // The daemon's first event is its fresh-start cleanup (docs/webhooks.md).
  const kinds = (name) => got[name].map((e) => e.type).filter((t) => t !== 'cleanup');
  for (const name of ['express', 'fastify', 'node']) {
    await waitFor(() => kinds(name).length >= 4, { what: name + ' deliveries' });
    assert.deepEqual(kinds(name), want, name);
  }
  assert.ok(nodeAttempts >= 2, 'the failed delivery was retried');
  const r = await fetch(`http://127.0.0.1:${ports.fastify}/other`);
  assert.deepEqual(await r.json(), { ok: true }, 'Fastify routes outside the plugin keep their JSON');
});

async function post(headers, body) {
  const r = await fetch(`http://127.0.0.1:${ports.express}/hook`, {
    method: 'POST', body,
    headers: Object.fromEntries(Object.entries({ 'content-type': 'application/json',
      'presence-timestamp': headers['presence-timestamp'], 'presence-signature': headers['presence-signature'] }).filter(([, v]) => v !== undefined)),
  });
  return { status: r.status, code: r.status === 204 ? null : (await r.json()).error.code };
}

test('a replayed, forged or stale request is refused', async () => {
  // A delivery naming alice (the first is the fresh-start cleanup).
  await waitFor(() => captured.some((c) => c.body.includes('alice')), { what: 'a captured delivery' });
  const { headers, body } = captured.find((c) => c.body.includes('alice'));
  const n = got.express.length;
  assert.deepEqual(await post(headers, body), { status: 409, code: 'replayed' });
  // The same capture with an entry that matches nothing appended (or put
  // first): still the delivery seen, refused as a replay.
  for (const padded of [headers['presence-signature'] + ',v1=00', 'v1=00, ' + headers['presence-signature']]) {
    assert.deepEqual(await post({ ...headers, 'presence-signature': padded }, body), { status: 409, code: 'replayed' }, padded);
  }
  const forged = Buffer.from(body.toString().replace('alice', 'mallory'));
  assert.deepEqual(await post(headers, forged), { status: 401, code: 'bad_signature' });
  // The body's message is the plain message, as the Python and Go SDKs
  // answer it (it repeated the code: "bad_signature: signature does not match").
  for (const port of [ports.express, ports.fastify, ports.node]) {
    const r = await fetch(`http://127.0.0.1:${port}/hook`, { method: 'POST', body: forged, headers: { 'content-type': 'application/json',
      'presence-timestamp': headers['presence-timestamp'], 'presence-signature': headers['presence-signature'] } });
    assert.deepEqual(await r.json(), { error: { code: 'bad_signature', message: 'signature does not match' } }, `port ${port}`);
  }
  const old = String(Date.now() - 600000);
  const sig = 'v1=' + createHmac('sha256', SECRET).update(old + '.').update(body).digest('hex');
  assert.deepEqual(await post({ 'presence-timestamp': old, 'presence-signature': sig }, body), { status: 401, code: 'stale' });
  assert.deepEqual(await post({ 'presence-timestamp': String(Date.now()) }, body), { status: 401, code: 'missing_signature' });
  // The same batch signed afresh (what a retry looks like): accepted, nothing applied twice.
  const now = String(Date.now());
  const again = 'v1=' + createHmac('sha256', SECRET).update(now + '.').update(body).digest('hex');
  assert.deepEqual(await post({ 'presence-timestamp': now, 'presence-signature': again }, body), { status: 204, code: null });
  assert.equal(got.express.length, n, 'no event applied twice');
});

test('verifyWebhook: key rotation, guard, parsed bodies refused', () => {
  const body = JSON.stringify({ instance: 'i1', first_seq: 1, last_seq: 2, events: [{ seq: 1 }, { seq: 2 }] });
  const ts = String(Date.now());
  const sign = (k) => 'v1=' + createHmac('sha256', k).update(ts + '.' + body).digest('hex');
  const headers = { 'presence-timestamp': ts, 'presence-signature': `v1=00, ${sign('new')}` };
  const guard = new WebhookGuard();
  const d = verifyWebhook({ secret: ['old', 'new'], headers, body, guard });
  assert.equal(d.events.length, 2);
  assert.throws(() => verifyWebhook({ secret: 'new', headers, body, guard }), (e) => e instanceof WebhookError && e.code === 'replayed');
  // The captured request again with a junk entry appended: the entry that
  // verified was seen, so it is a replay (the raw header was the key).
  assert.throws(() => verifyWebhook({ secret: 'new', headers: { ...headers, 'presence-signature': sign('new') + ',v1=11' }, body, guard }),
    (e) => e instanceof WebhookError && e.code === 'replayed');
  // A retry of the batch (a new timestamp, signed anew) with a junk entry: accepted, its events dropped by seq.
  const ts2 = String(Number(ts) + 1);
  const sig2 = 'v1=' + createHmac('sha256', 'new').update(ts2 + '.' + body).digest('hex');
  const d2 = verifyWebhook({ secret: 'new', headers: { 'presence-timestamp': ts2, 'presence-signature': sig2 + ',v1=11' }, body, guard });
  assert.equal(d2.duplicates, 2);
  // Rotation, both entries sent: a replay carrying only one of them is still refused.
  const ts3 = String(Number(ts) + 2);
  const sign3 = (k) => 'v1=' + createHmac('sha256', k).update(ts3 + '.' + body).digest('hex');
  const both = { 'presence-timestamp': ts3, 'presence-signature': `${sign3('old')},${sign3('new')}` };
  assert.equal(verifyWebhook({ secret: ['old', 'new'], headers: both, body, guard }).duplicates, 2);
  for (const one of [sign3('old'), sign3('new')]) {
    assert.throws(() => verifyWebhook({ secret: ['old', 'new'], headers: { ...both, 'presence-signature': one }, body, guard }),
      (e) => e.code === 'replayed', one);
  }
  assert.throws(() => verifyWebhook({ secret: 'new', headers, body: JSON.parse(body) }), (e) => e.code === 'no_raw_body');
  assert.throws(() => verifyWebhook({ secret: 'other', headers, body }), (e) => e.code === 'bad_signature' && e.status === 401);
});

test('a request other than a POST is 405 with Allow: POST, as the Go and Python receivers answer', async () => {
  // It was 401 missing_signature: a health check or a browser pointed at the
  // hook read "not signed" for "wrong method".
  for (const method of ['GET', 'PUT']) {
    const r = await fetch(`http://127.0.0.1:${ports.node}/hook`, { method, body: method === 'GET' ? undefined : '{}' });
    assert.equal(r.status, 405, method);
    assert.equal(r.headers.get('allow'), 'POST');
    assert.deepEqual(await r.json(), { error: { code: 'method_not_allowed', message: 'POST only' } });
  }
});
