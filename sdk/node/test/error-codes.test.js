// SPDX-License-Identifier: MIT
// The error codes index.d.ts names are the ones presenced answers, as the
// docs list them: ErrorCode was missing bad_origin, too_many_origins,
// bad_device, uri_too_long, not_implemented... (a caller's switch over it
// had no case for them), and 'rejected' typed its code as any string.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const read = (f) => fs.readFileSync(path.join(here, f), 'utf8');
const docs = read('../../../docs/api.md') + '\n' + read('../../../docs/protocol.md');
const dts = read('../index.d.ts');

/** The string literals of `export type NAME = ...;` in index.d.ts. */
function union(name) {
  const m = dts.match(new RegExp(`export type ${name} =([^;]*);`));
  assert.ok(m, `index.d.ts declares ${name}`);
  return new Set([...m[1].matchAll(/'([a-z_]+)'/g)].map((x) => x[1]));
}

/** Every code the docs give an HTTP status: "| 400 | `bad_request` |", "400 `a`, `b`", "`400 a`". */
function httpCodes() {
  const out = new Set();
  for (const m of docs.matchAll(/`?\b[45]\d\d\b`?(?: \|)? `([a-z_]+)`((?:(?:,| or|\/)?\s*`[a-z_]+`)*)/g)) {
    out.add(m[1]);
    for (const c of (m[2] || '').matchAll(/`([a-z_]+)`/g)) out.add(c[1]);
  }
  for (const m of docs.matchAll(/`[45]\d\d ([a-z_]+)`/g)) out.add(m[1]);
  // A browser's WebSocket refusals (/v1/ws): no SDK call can get them.
  return [...out].filter((c) => !c.startsWith('token_') && c !== 'origin_not_allowed').sort();
}

test('ErrorCode names every code of the HTTP API and of a refused backend connection', () => {
  const codes = httpCodes();
  assert.ok(codes.includes('bad_origin') && codes.length > 30, `codes read from the docs: ${codes}`);
  const have = union('ErrorCode');
  assert.deepEqual(codes.filter((c) => !have.has(c)), []);
  assert.ok(have.has('origin_taken_over') && have.has('network'));
});

test('BackendErrorCode names every per-op and frame code of protocol.md 5.2', () => {
  const section = docs.slice(docs.indexOf('### 5.2 Batches'), docs.indexOf('### 5.3'));
  const codes = new Set();
  for (const row of section.matchAll(/^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|/gm)) {
    for (const c of row[1].matchAll(/`([a-z_]+)`/g)) codes.add(c[1]);
  }
  assert.ok(codes.has('session_owned') && codes.has('rate_limited'), `codes read from the docs: ${[...codes]}`);
  const have = union('BackendErrorCode');
  assert.deepEqual([...codes].filter((c) => !have.has(c) && !['join', 'update', 'leave', 'open', 'status', 'close'].includes(c)), []);
});
