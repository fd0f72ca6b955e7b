// SPDX-License-Identifier: MIT
// presenced-node is published to npm: MIT, the protocol version as its major
// version, `ws` its only runtime dependency, and every file it names shipped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { PROTOCOL_VERSION } from '../index.js';

const dir = new URL('..', import.meta.url);
const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8'));

test('package.json is publishable', () => {
  assert.equal(pkg.private, undefined);
  assert.equal(pkg.license, 'MIT');
  assert.equal(Number(pkg.version.split('.')[0]), PROTOCOL_VERSION);
  assert.deepEqual(Object.keys(pkg.dependencies), ['ws']);
  for (const f of pkg.files) assert.ok(existsSync(new URL(f, dir)), `${f} exists`);
  assert.equal(pkg.exports['.'].types, './index.d.ts');
  assert.match(readFileSync(new URL('README.md', dir), 'utf8'), /```js\nimport \{ PresenceAPI, mintToken \} from 'presenced-node';/);
});
