// SPDX-License-Identifier: MIT
// index.d.ts under tsc --strict, over a program written as the README shows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('index.d.ts type-checks under tsc --strict (and refuses misuse)', async () => {
  const tsc = path.join(root, 'node_modules/typescript/bin/tsc');
  const r = await new Promise((resolve) => execFile(process.execPath, [tsc, '-p', path.join(root, 'test/types/tsconfig.json')],
    { timeout: 60000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, out: stdout + stderr })));
  assert.equal(r.code, 0, r.out);
});
