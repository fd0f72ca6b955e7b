// SPDX-License-Identifier: MIT
// parseSSE (exported) over the line ends the SSE format allows, which a proxy
// between presenced and the SDK may mix: an event's id must never be lost,
// since the cursor (and so resuming without repeats) depends on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSSE } from '../index.js';

test('blocks ended by CRLF then LF, or LF then CRLF, keep every field of the next block', () => {
  const got = [];
  const rest = parseSSE('id: 5\r\nevent: user.online\r\ndata: {"seq":5}\r\n\nid: 6\nevent: user.idle\ndata: {"seq":6}\n\r\nid: 7\ndata: {"seq":7}\n\nid: 8', (e) => got.push(e));
  assert.deepEqual(got.map((e) => [e.id, e.event, e.data.join('\n')]),
    [['5', 'user.online', '{"seq":5}'], ['6', 'user.idle', '{"seq":6}'], ['7', 'message', '{"seq":7}']]);
  assert.equal(rest, 'id: 8');
});

test('an id-only block (events a filtered stream skipped) is a cursor move in its place, not an event', () => {
  const got = [];
  const rest = parseSSE('id: 5\nevent: user.offline\ndata: {"seq":5}\n\nid: 9\n\nid: c12\r\n\r\n: keepalive\n\n',
    (e) => got.push(['event', e.id]), (id) => got.push(['cursor', id]));
  assert.deepEqual(got, [['event', '5'], ['cursor', '9'], ['cursor', 'c12']]);
  assert.equal(rest, '');
  const events = [];
  parseSSE('id: 9\n\n', (e) => events.push(e));
  assert.deepEqual(events, [], 'without onIdOnly: nothing dispatched, as before');
});
