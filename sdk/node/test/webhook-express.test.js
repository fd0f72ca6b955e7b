// SPDX-License-Identifier: MIT
// The README's Express receiver, as written, against a real presenced: when
// applying a delivery fails (the route throws, Express answers 500),
// presenced retries the batch, and the retry must bring its events again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import { webhookMiddleware } from '../index.js';
import { Presenced, connectUser, freePort, waitFor } from './lib.js';

const secret = 'sdk-node-webhook-secret-express-0123';
const applied = [];
let failed = 0;
let pd, server;

function apply(e) {
  if (e.type === 'user.online' && failed++ === 0) throw new Error('database down');
  applied.push(e.type);
}

before(async () => {
  const app = express();
  app.post('/presence', webhookMiddleware({ secret }), (req, res) => {
    for (const e of req.presence.events) apply(e);   // req.presence.gap: re-read state
    res.sendStatus(204);
  });
  app.use((_err, _req, res, _next) => res.status(500).end());   // quiet: Express logs a thrown error
  const port = await freePort();
  server = app.listen(port, '127.0.0.1');
  pd = new Presenced(['--webhook', `url=http://127.0.0.1:${port}/presence,secret=${secret},events=user.*`,
    '--webhook-batch-ms', '10', '--webhook-retry-min-ms', '50', '--webhook-retry-max-ms', '100']);
  await pd.start();
});
after(async () => { await pd.stop(); server.close(); });

test('a delivery whose Express route failed is applied by presenced\'s retry, not dropped as seen', async () => {
  const a = await connectUser(pd, 'erin');
  await waitFor(() => failed >= 1, { what: 'the failed attempt' });
  await waitFor(() => applied.includes('user.online'), { timeout: 3000, what: 'user.online applied by a retry' });
  a.close();
  await waitFor(() => applied.includes('user.offline'), { what: 'user.offline' });
  assert.deepEqual(applied, ['user.online', 'user.offline']);
});
