// SPDX-License-Identifier: MIT
// clients/js is published to npm: its metadata must say so, with the licence,
// a major version that is the protocol version, and every file it names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { PROTOCOL_VERSION } from '../presence.js';

const dir = new URL('..', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8'));

test('package.json is publishable: not private, MIT, major version = protocol version', () => {
  assert.equal(pkg.private, undefined);
  assert.equal(pkg.license, 'MIT');
  assert.equal(Number(pkg.version.split('.')[0]), PROTOCOL_VERSION);
  assert.deepEqual(Object.keys(pkg.dependencies || {}), [], 'the browser client has no runtime dependency');
  for (const f of pkg.files) assert.ok(existsSync(new URL(f, dir)), `${f} is shipped and exists`);
  assert.equal(pkg.exports['.'].types, './presence.d.ts');
});
