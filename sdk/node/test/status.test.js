// SPDX-License-Identifier: MIT
// Status that people set, through the API client, against a real presenced:
// availability, the status message with its expiry, devices from the token's
// claim; their events on the stream; refusals as typed errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceAPI, PresenceError } from '../index.js';
import { Presenced, connectUser, waitFor, API_KEY } from './lib.js';

const pd = new Presenced();
let api;
before(async () => { await pd.start(); api = new PresenceAPI({ url: pd.url, apiKey: API_KEY }); });
after(() => pd.stop());

test('availability, message and devices, with their events', async () => {
  const stream = api.events();
  const items = [];
  const reading = (async () => { for await (const e of stream) items.push(e); })().catch(() => {});
  await waitFor(() => stream.connects === 1, { what: 'stream' });
  const phone = await connectUser(pd, 'gina', { device: 'mobile' });
  await waitFor(async () => (await api.getUser('gina')).status === 'online', { what: 'gina online' });
  assert.deepEqual(Object.keys((await api.getUser('gina')).devices), ['mobile']);

  assert.deepEqual(await api.setAvailability('gina', 'dnd'), { user_id: 'gina', availability: 'dnd' });
  const m = await api.setMessage('gina', { text: 'Lunch', emoji: '🥪', expiresInS: 1800 });
  assert.equal(m.message.text, 'Lunch');
  const u = await api.getUser('gina');
  assert.equal(u.availability, 'dnd');
  assert.equal(u.message.emoji, '🥪');
  assert.ok(u.message.expires > Date.now() + 1700_000);
  await api.clearMessage('gina');
  assert.equal((await api.getUser('gina')).message, null);
  await waitFor(() => items.filter((e) => e.type === 'user.message').length === 2, { what: 'message events' });
  const kinds = items.filter((e) => e.data.user_id === 'gina' && e.type.startsWith('user.')).map((e) => e.type);
  assert.deepEqual(kinds, ['user.online', 'user.availability', 'user.message', 'user.message']);
  stream.close();
  await reading;
  phone.close();
});

test('bad settings are typed errors and store nothing', async () => {
  const e1 = await api.setAvailability('gina', 'asleep').catch((e) => e);
  assert.ok(e1 instanceof PresenceError);
  assert.equal(e1.code, 'bad_availability');
  const e2 = await api.setMessage('gina', { text: 'x'.repeat(500) }).catch((e) => e);
  assert.equal(e2.code, 'bad_message');
  const e3 = await api.setMessage('gina', { text: 'late', expiresAt: Date.now() - 1000 }).catch((e) => e);
  assert.equal(e3.code, 'bad_expiry');
  assert.equal((await api.getUser('gina')).message, null);
});

test('the event stream filters by type on the server', async () => {
  const only = api.events({ types: ['user.availability'] });
  const it = only[Symbol.asyncIterator]();
  const firstP = it.next();                           // connects (the stream is lazy)
  await waitFor(() => only.connects === 1, { what: 'stream' });
  await api.setAvailability('hal', 'away');           // no session: an event all the same
  const u = await connectUser(pd, 'hal');
  await api.setAvailability('hal', 'dnd');
  const first = await firstP;
  assert.equal(first.value.type, 'user.availability');
  const second = await it.next();
  assert.deepEqual([second.value.type, second.value.data.to], ['user.availability', 'dnd'], 'no session or user event in between');
  await it.return();
  u.close();
  const bad = api.events({ types: 'bogus' })[Symbol.asyncIterator]();
  await assert.rejects(bad.next(), (e) => e.code === 'bad_request');
});
