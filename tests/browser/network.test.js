// SPDX-License-Identifier: MIT
// The network of a long-lived page goes away and comes back (Chromium's own
// offline mode, playwright's setOffline): the demo page against a real
// presenced. An open WebSocket is not closed by the browser going offline;
// the page must not go on saying 'connected' until its next ping.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Presenced, freePort, waitFor, sleep, launchChromium, artifact } from './lib.js';

let port, server, browser;
const pages = [];
// The server's heartbeat: a session whose pongs stop is closed after
// TIMEOUT_MS (then watchers see it offline; the offline grace is 0 here).
const TIMEOUT_MS = Number(process.env.NETWORK_TIMEOUT_MS || 20000);

before(async () => {
  port = await freePort();
  server = await new Presenced({ port, args: ['--heartbeat-ms', '1000', '--timeout-ms', String(TIMEOUT_MS)] }).start();
  browser = await launchChromium();
});

after(async () => {
  for (const p of pages) await p.close().catch(() => {});
  if (browser) await browser.close();
  if (server) await server.stop();
});

async function join(ctx, name) {
  const page = await ctx.newPage();
  pages.push(page);
  page.on('pageerror', (e) => console.error('[' + name + '] page error:', e.message));
  // The page's defaults: an application ping after 25 s of silence, an
  // answer awaited 10 s.
  await page.goto('http://127.0.0.1:' + port + '/?' + new URLSearchParams({ retry: '30000', idle: '600000' }));
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Join' }).click();
  await page.waitForFunction(() => window.presenceDemo && window.presenceDemo.client.state === 'open', null, { timeout: 10000 });
  return page;
}

const connText = (page) => page.locator('#conn').textContent();
const statusOf = (page, user) => page.locator(`#roster li[data-user="${user}"]`).getAttribute('data-status', { timeout: 1000 }).catch(() => null);

test('offline: the page says the connection is lost within the pong timeout, and is back at once when online', async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const alice = await join(ctxA, 'alice');
  const bob = await join(ctxB, 'bob');
  await waitFor(async () => (await statusOf(bob, 'alice')) === 'online', { what: 'bob sees alice online' });
  const first = await alice.evaluate(() => window.presenceDemo.client.sessionId);

  await ctxA.setOffline(true);
  const t0 = Date.now();
  // The browser says offline; the client checks its connection at once.
  await waitFor(async () => (await alice.evaluate(() => window.presenceDemo.client.state)) !== 'open',
    { timeout: 16000, interval: 200, what: 'alice\'s page no longer open' });
  const took = Date.now() - t0;
  assert.ok(took < 16000, 'left open ' + took + ' ms (the pong timeout is 10 s; the next ping would have come after 25 s)');
  assert.match(await connText(alice), /connection lost/);
  await alice.screenshot({ path: artifact('network-alice-offline.png'), fullPage: true });

  // Back online: no wait for the backoff (up to 30 s here).
  await sleep(1500);
  await ctxA.setOffline(false);
  await waitFor(async () => (await alice.evaluate(() => window.presenceDemo.client.state)) === 'open',
    { timeout: 5000, what: 'alice open again' });
  assert.notEqual(await alice.evaluate(() => window.presenceDemo.client.sessionId), first);
  assert.equal(await connText(alice), 'connected');
  await waitFor(async () => (await statusOf(bob, 'alice')) === 'online', { what: 'bob sees alice online again' });
  await waitFor(async () => (await statusOf(alice, 'bob')) === 'online', { what: 'alice\'s roster: bob online' });
  await ctxA.close();
  await ctxB.close();
});
