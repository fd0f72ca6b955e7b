// SPDX-License-Identifier: MIT
// The demo page: its link to the client module, and its pure helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { timeAgo, describe, compareUsers, readSettings } from '../../../web/format.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));

test('web/presence.js is the client itself (a link, one source)', () => {
  const link = here('../../../web/presence.js');
  assert.ok(fs.lstatSync(link).isSymbolicLink(), 'web/presence.js must link to clients/js/presence.js');
  assert.equal(fs.realpathSync(link), fs.realpathSync(here('../presence.js')));
});

test('timeAgo', () => {
  const now = 10_000_000;
  assert.equal(timeAgo(now - 1000, now), 'just now');
  assert.equal(timeAgo(now + 5000, now), 'just now');
  assert.equal(timeAgo(now - 42_000, now), '42 seconds ago');
  assert.equal(timeAgo(now - 60_000, now), '1 minute ago');
  assert.equal(timeAgo(now - 3 * 60_000 - 5000, now), '3 minutes ago');
  assert.equal(timeAgo(now - 3_600_000, now), '1 hour ago');
  assert.equal(timeAgo(now - 2 * 86_400_000, now), '2 days ago');
});

test('describe', () => {
  const now = 10_000_000;
  assert.equal(describe({ status: 'online' }, now), 'online');
  assert.equal(describe({ status: 'offline', last_seen: now - 180_000 }, now), 'offline, last seen 3 minutes ago');
  assert.equal(describe({ status: 'offline', last_seen: 0 }, now), 'offline, never seen');
  assert.equal(describe({ status: 'idle', since: now - 120_000 }, now), 'idle for 2 minutes');
  assert.equal(describe({ status: 'idle', since: now - 1000 }, now), 'idle for a moment');
});

test('compareUsers: online, idle, offline, then by name', () => {
  const list = [
    { user_id: 'd', status: 'offline' }, { user_id: 'b', status: 'idle' },
    { user_id: 'c', status: 'online' }, { user_id: 'a', status: 'online' },
  ].sort(compareUsers);
  assert.deepEqual(list.map((u) => u.user_id), ['a', 'c', 'b', 'd']);
});

test('readSettings', () => {
  const s = readSettings('?idle=1500&hidden=1&ping=0&retry=2000&name=al');
  assert.deepEqual(s, { idleMs: 1500, whenHidden: true, pingMs: 0, retryMaxMs: 2000, name: 'al' });
  const d = readSettings('?idle=abc');
  assert.equal(d.idleMs, 60000);
  assert.equal(d.whenHidden, false);
});

test('availabilityLabel and messageLine (status that people set)', async () => {
  const { availabilityLabel, messageLine } = await import('../../../web/format.js');
  assert.equal(availabilityLabel({ availability: 'dnd' }), 'do not disturb');
  assert.equal(availabilityLabel({ availability: 'away' }), 'away');
  assert.equal(availabilityLabel({ availability: 'auto' }), '');
  assert.equal(availabilityLabel({ availability: 'invisible' }), 'invisible: others see you offline');
  assert.equal(availabilityLabel(null), '');
  const now = 1_000_000_000;
  assert.equal(messageLine(null, now), '');
  assert.equal(messageLine({ text: 'Lunch', emoji: '🥪', expires: null }, now), '🥪 Lunch');
  assert.equal(messageLine({ text: null, emoji: '🏖', expires: null }, now), '🏖');
  assert.equal(messageLine({ text: 'x', emoji: null, expires: now + 60_000 }, now), 'x (clears in 1 min)');
  assert.equal(messageLine({ text: 'x', emoji: null, expires: now + 3 * 3600_000 }, now), 'x (clears in 3 h)');
});
