// SPDX-License-Identifier: MIT
// The API key as it comes from a file or the environment, against a real
// presenced: a trailing newline works in every client (fetch drops it; the
// backend connection's WebSocket threw from inside its loop and ended the
// process), and a key that cannot be a header is refused when the client is
// made, without printing it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { PresenceAPI, BackendConnection, EventStream } from '../index.js';
import { Presenced, API_KEY } from './lib.js';

const pd = new Presenced();
before(() => pd.start());
after(() => pd.stop());

test('a key read from a file (trailing newline) works for the API, the stream and the backend connection', async (t) => {
  const key = API_KEY + '\n';
  const api = new PresenceAPI({ url: pd.url, apiKey: key });
  assert.equal((await api.getUser('alice')).user_id, 'alice');
  const stream = api.events({ after: 0 });
  for await (const e of stream) { assert.equal(e.gap, false); break; }
  const b = new BackendConnection({ url: pd.url, apiKey: key, origin: 'node-key' });
  t.after(() => b.end({ bye: true }));
  const w = await b.connect();
  assert.equal(w.origin, 'node-key');
});

test('a key holding a control or non-Latin-1 character is a TypeError at construction that does not show it', () => {
  for (const key of ['secret-part\u0001-more-secret-0123456789', 'secret-part\n-more-secret-0123456789', 'sécret-ключ-0123456789-abcdefghij']) {
    for (const make of [
      () => new PresenceAPI({ url: pd.url, apiKey: key }),
      () => new EventStream({ url: pd.url, apiKey: key }),
      () => new BackendConnection({ url: pd.url, apiKey: key, origin: 'o' }),
    ]) {
      assert.throws(make, (e) => e instanceof TypeError && /apiKey/.test(e.message) && !e.message.includes('secret-part') && !e.message.includes('ключ'),
        JSON.stringify(key));
    }
  }
});

test('logging a client (console.log, JSON.stringify) does not print the key', async (t) => {
  const api = new PresenceAPI({ url: pd.url, apiKey: API_KEY });
  const stream = api.events();
  const b = new BackendConnection({ url: pd.url, apiKey: API_KEY, origin: 'node-log' });
  for (const o of [api, stream, b]) {
    assert.ok(!inspect(o, { depth: 5 }).includes(API_KEY), `inspect(${o.constructor.name})`);
    assert.ok(!JSON.stringify(o).includes(API_KEY), `JSON.stringify(${o.constructor.name})`);
  }
  assert.equal((await api.getUser('alice')).user_id, 'alice', 'the key is still sent');
  t.after(() => b.end());
});
