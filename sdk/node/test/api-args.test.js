// SPDX-License-Identifier: MIT
// The API client with arguments a caller gets wrong (an unset variable, a
// typo'd field, a string for a list), against a real presenced: a clear
// TypeError, never an answer about a user or session named "undefined".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { BackendConnection, PresenceAPI, PresenceError } from '../index.js';
import { Presenced, API_KEY } from './lib.js';

const pd = new Presenced();
let api;
before(async () => { await pd.start(); api = new PresenceAPI({ url: pd.url, apiKey: API_KEY }); });
after(() => pd.stop());

test('an id that is undefined, null, empty or an object is a TypeError, not a request', async () => {
  // Before: getUser(undefined) answered an offline user "undefined", and
  // kick(undefined) a 404 no_session, which the README's catch takes for
  // "already gone".
  for (const bad of [undefined, null, '', { id: 'alice' }]) {
    await assert.rejects(api.getUser(bad), TypeError, `getUser(${String(bad)})`);
    await assert.rejects(api.kick(bad), TypeError, `kick(${String(bad)})`);
    await assert.rejects(api.sessions(bad), TypeError, `sessions(${String(bad)})`);
    await assert.rejects(api.setAvailability(bad, 'dnd'), TypeError, `setAvailability(${String(bad)})`);
    await assert.rejects(api.channelMembers(bad), TypeError, `channelMembers(${String(bad)})`);
  }
  // '.' and '..': fetch resolves them in a path, so getUser('..') was GET
  // /v1/ and answered 404 not_found "no such endpoint"; now a TypeError that
  // says why, and getUsers (ids in a body) reads such a user.
  for (const dots of ['.', '..']) {
    await assert.rejects(api.getUser(dots), (e) => e instanceof TypeError && /dot segment/.test(e.message), `getUser(${dots})`);
    await assert.rejects(api.sessions(dots), TypeError, `sessions(${dots})`);
    await assert.rejects(api.channel(dots), TypeError, `channel(${dots})`);
    assert.equal((await api.getUsers([dots]))[0].user_id, dots);
  }
  assert.equal((await api.getUser('...')).user_id, '...');
  // one string where a list is wanted, as the Python SDK refuses it too
  await assert.rejects(api.getUsers('alice'), TypeError);
  await assert.rejects(api.getUsers(undefined), TypeError);
  // what stays valid
  assert.equal((await api.getUser('alice')).user_id, 'alice');
  assert.equal((await api.getUser(42)).user_id, '42');
  await assert.rejects(api.kick('no-such-session'), (e) => e instanceof PresenceError && e.code === 'no_session');
});

test('an answer cut short or too slow is a PresenceError (network, retryable), as the README says of every failure', async (t) => {
  // A proxy in front of presenced that drops the connection mid-body, and
  // one that sends the head, then nothing.
  const cut = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100' });
    res.write('{"user_id":"al');
    setTimeout(() => res.socket.destroy(), 20);
  });
  const slow = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100' });
    res.write('{"user_id":"al');
  });
  for (const s of [cut, slow]) await new Promise((r) => s.listen(0, '127.0.0.1', r));
  t.after(() => { cut.closeAllConnections(); cut.close(); slow.closeAllConnections(); slow.close(); });
  for (const s of [cut, slow]) {
    const e = await new PresenceAPI({ url: `http://127.0.0.1:${s.address().port}`, apiKey: API_KEY, timeoutMs: 300 })
      .getUser('alice').catch((x) => x);
    assert.ok(e instanceof PresenceError, `${e && e.name}: ${e && e.message}`);
    assert.equal(e.code, 'network');
    assert.equal(e.retryable, true);
  }
});

test('a url or timeoutMs that cannot work is a TypeError when the client is made, not a retryable network error at each call', async () => {
  // Before: every call failed with code 'network', retryable, so a caller's
  // retry loop (and the event stream) went on for ever.
  for (const o of [{ timeoutMs: 'ten seconds' }, { timeoutMs: NaN }, { timeoutMs: -1 },
    { url: '127.0.0.1:7070' }, { url: 'ws://127.0.0.1:7070' }, { url: 'http://' }]) {
    assert.throws(() => new PresenceAPI({ url: pd.url, apiKey: API_KEY, ...o }), TypeError, JSON.stringify(o));
  }
  // Credentials in the url cannot be sent by fetch; the message must not repeat them.
  assert.throws(() => new PresenceAPI({ url: 'http://admin:hunter2-secret@127.0.0.1:7070', apiKey: API_KEY }),
    (e) => e instanceof TypeError && !e.message.includes('hunter2'));
  assert.equal((await new PresenceAPI({ url: pd.url + '/', apiKey: API_KEY, timeoutMs: 5000 }).health()).status, 'ok');
  // BackendConnection too: without a scheme, ws threw a SyntaxError inside its
  // reconnect loop, out of any caller's reach: the process died.
  for (const url of ['127.0.0.1:7070', 'localhost:7070', 'ftp://127.0.0.1:7070', 'http://']) {
    assert.throws(() => new BackendConnection({ url, apiKey: API_KEY, origin: 'o' }), TypeError, url);
  }
  const b = new BackendConnection({ url: pd.url + '/', apiKey: API_KEY, origin: 'args-url' });
  assert.equal((await b.connect()).type, 'welcome');
  await b.end({ bye: true });
});

test('an event stream\'s retryMs or maxRetryMs that is not a positive number is a TypeError, not a retry every millisecond', async () => {
  // setTimeout(NaN) waits 1 ms: a stream to a presenced that is down hammered it.
  const down = new PresenceAPI({ url: 'http://127.0.0.1:1', apiKey: API_KEY });
  for (const o of [{ retryMs: NaN }, { retryMs: 0 }, { maxRetryMs: NaN }, { retryMs: 'soon' }]) {
    assert.throws(() => down.events(o), TypeError, JSON.stringify(o));
  }
});
