// SPDX-License-Identifier: MIT
// clients/js/README.md's code, run as written in Chromium: its first example
// (the client) and its channels example, pasted one after the other into a
// module of a page, the way a frontend developer starts. Only what the
// README leaves to the reader is supplied: its URL (the one line replaced),
// its token endpoint (answered with a demo token) and the render functions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Presenced, freePort, request, launchChromium, ROOT } from './lib.js';

let port, server, browser;

before(async () => {
  port = await freePort();
  server = await new Presenced({ port }).start();
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

function jsBlocks() {
  const md = fs.readFileSync(path.join(ROOT, 'clients/js/README.md'), 'utf8');
  return [...md.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
}

test('the README\'s client and channels examples run as written, one after the other', async () => {
  const blocks = jsBlocks();
  const first = blocks[0];
  const channels = blocks.find((b) => b.includes(".channel('room:1'"));
  assert.ok(first && first.includes('new PresenceClient') && channels, 'the examples are found');
  const code = first.replace(/url: 'wss:\/\/presence\.example\.com\/v1\/ws',/, `url: 'ws://127.0.0.1:${port}/v1/ws',`)
    + '\n' + channels + '\nwindow.readmeDone = true;\n';
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.route('**/api/presence-token', async (route) => {
    const r = await request(port, 'POST', '/v1/demo/token', { name: 'reader' });
    await route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ token: r.json.token }) });
  });
  await page.goto(`http://127.0.0.1:${port}/`);
  // What the README leaves to the reader.
  await page.evaluate(() => { for (const f of ['render', 'add', 'remove', 'change']) window[f] = () => {}; });
  await page.addScriptTag({ type: 'module', content: code });
  await page.waitForFunction(() => window.readmeDone === true || null, null, { timeout: 5000 }).catch(() => {});
  assert.deepEqual(errors, []);
  assert.equal(await page.evaluate(() => window.readmeDone), true);
  await page.close();
});
