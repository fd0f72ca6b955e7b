// SPDX-License-Identifier: MIT
// docs/guides/meteor.md's server code, taken from the guide as it is written,
// run against a real presenced with a stand-in for Meteor (meteor-stub.js):
// a DDP login comes online on the user record through the webhook, the
// client's setStatusIdle makes it idle, closing the connection unsets it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Presenced, freePort, waitFor, API_KEY, ROOT } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SECRET = 'meteor-guide-webhook-secret-0123456789abcdef';
let pd, server, stub, presence;

/** The first ```js block after `marker` in the guide, its imports pointed at the stub and the SDK. */
function block(md, marker) {
  const at = md.indexOf(marker);
  assert.ok(at >= 0, `the guide has ${marker}`);
  const start = md.indexOf('```js\n', at) + 6;
  const code = md.slice(start, md.indexOf('```', start));
  return code
    .replace(/from 'meteor\/[a-z-]+'/g, `from '${pathToFileURL(path.join(here, 'meteor-stub.js'))}'`)
    .replace(/from 'presenced-node'/g, `from '${pathToFileURL(path.join(here, '..', 'index.js'))}'`);
}

before(async () => {
  const md = fs.readFileSync(path.join(ROOT, 'docs/guides/meteor.md'), 'utf8');
  const port = await freePort();
  stub = await import(pathToFileURL(path.join(here, 'meteor-stub.js')));
  server = http.createServer(stub.WebApp._listener);
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  pd = new Presenced(['--webhook', `url=http://127.0.0.1:${port}/presence/webhook,secret=${SECRET},events=user.*|cleanup`,
    '--webhook-batch-ms', '10']);
  await pd.start();
  Object.assign(stub.Meteor.settings.presenced, { url: pd.url, apiKey: API_KEY, webhookSecret: SECRET });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meteor-guide-'));
  for (const [name, marker] of [['presence.mjs', '`server/presence.js`:'], ['webhook.mjs', '`server/presence-webhook.js`:']]) {
    fs.writeFileSync(path.join(dir, name), block(md, marker));
  }
  ({ presence } = await import(pathToFileURL(path.join(dir, 'presence.mjs'))));
  await import(pathToFileURL(path.join(dir, 'webhook.mjs')));
  await waitFor(() => presence.connects === 1, { what: 'the backend connection' });
});
after(async () => {
  if (presence) await presence.end({ bye: true });
  await pd.stop();
  server.close();
});

test('the guide\'s Basic Usage: status and lastOnline on the user record, setStatusIdle, offline', async () => {
  const users = stub.Meteor.users;
  users.docs.set('alice', { _id: 'alice' });
  const closers = [];
  const connection = { id: 'ddp-1', clientAddress: '127.0.0.1', onClose: (fn) => closers.push(fn) };
  stub.Accounts._login({ user: { _id: 'alice' }, connection });
  await waitFor(() => users.docs.get('alice').status === 'online', { what: 'alice online on her record' });
  assert.ok(users.docs.get('alice').lastOnline instanceof Date);
  stub.Meteor._call('presence.setStatus', connection, 'idle');         // the client's setStatusIdle()
  await waitFor(() => users.docs.get('alice').status === 'idle', { what: 'alice idle' });
  assert.throws(() => stub.Meteor._call('presence.setStatus', connection, 'asleep'));
  stub.Meteor._call('presence.setStatus', connection, 'online');       // setStatusOnline()
  await waitFor(() => users.docs.get('alice').status === 'online', { what: 'alice online again' });
  for (const f of closers) f();                                        // the DDP connection closes
  await waitFor(() => users.docs.get('alice').status === undefined, { what: 'alice offline: status unset' });
});
