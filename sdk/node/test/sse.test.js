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
