// SPDX-License-Identifier: MIT
// The README's example program runs against a real presenced and says what it should.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Presenced, API_KEY, JWT_SECRET } from './lib.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const pd = new Presenced();
before(() => pd.start());
after(() => pd.stop());

test('examples/quickstart.js', async () => {
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(here, '../examples/quickstart.js')], {
      timeout: 20000,
      env: { ...process.env, PRESENCED_URL: pd.url, PRESENCED_API_KEY: API_KEY, PRESENCED_JWT_SECRET: JWT_SECRET },
    }, (err, stdout, stderr) => (err ? reject(new Error(err.message + stderr)) : resolve(stdout)));
  });
  const lines = out.trim().split('\n');
  assert.deepEqual(lines.map((l) => l.replace(/^event \d+ /, 'event ')), [
    'event session.connected alice (connect)',
    'event user.online alice (connect)',
    'alice is online with 1 session(s), device web',
    'event session.disconnected alice (kicked)',
    'event user.offline alice (kicked)',
    'kick again: 404 no_session',
  ]);
});
