// SPDX-License-Identifier: MIT
// Status that people set on the demo page, in Chromium against a real
// presenced: Alice picks "Do not disturb" and "Invisible" from the
// availability menu and sets a status message with "clear after"; Bob's page
// shows each as the protocol's table says (dnd: online with a badge,
// invisible: offline), the backend sees the truth, and the message clears
// itself at its expiry. Screenshots are kept in artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Presenced, freePort, waitFor, api, launchChromium, artifact } from './lib.js';

let port, server, browser, ctxA, ctxB;
const pages = [];

before(async () => {
  port = await freePort();
  server = await new Presenced({ port }).start();
  browser = await launchChromium();
  ctxA = await browser.newContext({ viewport: { width: 760, height: 720 } });
  ctxB = await browser.newContext({ viewport: { width: 760, height: 720 } });
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
  await page.goto('http://127.0.0.1:' + port + '/?' + new URLSearchParams({ ping: '0', retry: '1000', idle: '600000' }));
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Join' }).click();
  await page.waitForFunction(() => window.presenceDemo && window.presenceDemo.client.state === 'open', null, { timeout: 10000 });
  return page;
}

const attr = (page, user, name) => page.locator(`#roster li[data-user="${user}"]`).getAttribute(name, { timeout: 1000 }).catch(() => null);

async function expectAttr(page, user, name, value, timeout = 8000) {
  await waitFor(async () => (await attr(page, user, name)) === value, { timeout, what: `${user} ${name}=${value}` });
}

async function truth(user) {
  const r = await api(port, 'GET', '/v1/users/' + user);
  return r.json;
}

test('availability menu: dnd and invisible as watchers see them, the truth for backends', async () => {
  const alice = await join(ctxA, 'alice');
  const bob = await join(ctxB, 'bob');
  await expectAttr(bob, 'alice', 'data-status', 'online');
  await expectAttr(bob, 'alice', 'data-availability', 'auto');

  await alice.getByLabel('Show me as').selectOption('dnd');
  await expectAttr(bob, 'alice', 'data-availability', 'dnd');
  assert.equal(await attr(bob, 'alice', 'data-status'), 'online');
  const badge = await bob.locator('#roster li[data-user="alice"] .avail').textContent();
  assert.equal(badge, 'do not disturb');
  await bob.screenshot({ path: artifact('status-bob-sees-alice-dnd.png'), fullPage: true });

  await alice.getByLabel('Show me as').selectOption('invisible');
  await expectAttr(bob, 'alice', 'data-status', 'offline');
  assert.equal(await attr(bob, 'alice', 'data-availability'), 'auto');
  const t = await truth('alice');
  assert.equal(t.status, 'online');
  assert.equal(t.availability, 'invisible');
  await bob.screenshot({ path: artifact('status-bob-sees-alice-invisible.png'), fullPage: true });

  await alice.getByLabel('Show me as').selectOption('auto');
  await expectAttr(bob, 'alice', 'data-status', 'online');
  await expectAttr(bob, 'alice', 'data-availability', 'auto');
});

test('status message with "clear after": shown to watchers, cleared by the server at expiry', async () => {
  const alice = pages[0];
  const bob = pages[1];
  await alice.getByLabel('Emoji').fill('📅');
  await alice.getByLabel('Status message').fill('In a meeting');
  await alice.getByLabel('Clear after').selectOption('60');
  await alice.getByRole('button', { name: 'Set', exact: true }).click();
  await expectAttr(bob, 'alice', 'data-message', 'In a meeting');
  const line = await bob.locator('#roster li[data-user="alice"] .status-msg').textContent();
  assert.match(line, /^📅 In a meeting \(clears in 1 min\)$/);
  await alice.screenshot({ path: artifact('status-alice-sets-message.png'), fullPage: true });
  await bob.screenshot({ path: artifact('status-bob-sees-alice-message.png'), fullPage: true });
  const t = await truth('alice');
  assert.equal(t.message.text, 'In a meeting');
  assert.ok(t.message.expires > Date.now() + 50000 && t.message.expires <= Date.now() + 61000, JSON.stringify(t.message));

  // Expiry on the server, shortened through the API for the test: a message
  // that expires in 1 s clears itself on every watcher.
  const r = await api(port, 'PUT', '/v1/users/alice/message', { text: 'Back in a second', expires_in: 1 });
  assert.equal(r.status, 200);
  await expectAttr(bob, 'alice', 'data-message', 'Back in a second');
  await expectAttr(bob, 'alice', 'data-message', '', 5000);
  assert.equal((await truth('alice')).message, null);

  // Clear button.
  await alice.getByLabel('Status message').fill('Lunch');
  await alice.getByLabel('Clear after').selectOption('0');
  await alice.getByRole('button', { name: 'Set', exact: true }).click();
  await expectAttr(bob, 'alice', 'data-message', 'Lunch');
  await alice.getByRole('button', { name: 'Clear', exact: true }).click();
  await expectAttr(bob, 'alice', 'data-message', '');
});

test('a refused message shows the server error and stores nothing', async () => {
  const alice = pages[0];
  await alice.evaluate(() => { document.getElementById('status-text').removeAttribute('maxlength'); });
  await alice.getByLabel('Status message').fill('x'.repeat(129));
  await alice.getByRole('button', { name: 'Set', exact: true }).click();
  await waitFor(async () => /bad_message/.test(await alice.locator('#setting-error').textContent()), { what: 'the error shown' });
  // Shown once, beside the form: the page-wide error line stays empty (the
  // refusal was also an 'error' event, shown there a second time).
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await alice.locator('#errors').textContent(), '');
  await alice.screenshot({ path: artifact('status-alice-message-refused.png'), fullPage: true });
  assert.equal((await truth('alice')).message, null);
});

test('invisible, as the user sees it: a second tab and a reload show "Invisible" in the menu and on their own row', async () => {
  // Before: a watcher's view of yourself is all a page had, and invisible
  // shows there as offline, 'auto'. A tab opened (or reloaded) while the
  // user was invisible showed "Automatic" in its menu and the user as gone.
  const alice = pages[0];
  const bob = pages[1];
  await alice.getByLabel('Show me as').selectOption('invisible');
  await expectAttr(bob, 'alice', 'data-status', 'offline');
  const other = await join(ctxA, 'alice'); // the same user in a new tab
  await waitFor(async () => (await other.getByLabel('Show me as').inputValue()) === 'invisible', { what: 'menu of the new tab says invisible' });
  await expectAttr(other, 'alice', 'data-availability', 'invisible');
  assert.match(await other.locator('#roster li[data-user="alice"] .avail').textContent(), /invisible/);
  await other.screenshot({ path: artifact('status-alice-second-tab-invisible.png'), fullPage: true });
  // The first tab sets dnd: the second follows.
  await alice.getByLabel('Show me as').selectOption('dnd');
  await waitFor(async () => (await other.getByLabel('Show me as').inputValue()) === 'dnd', { what: 'menu of the second tab follows to dnd' });
  await expectAttr(other, 'alice', 'data-availability', 'dnd');
  await alice.getByLabel('Show me as').selectOption('auto');
  await waitFor(async () => (await other.getByLabel('Show me as').inputValue()) === 'auto', { what: 'menu back to auto' });
  await other.close();
});

test('a setting picked while disconnected: "Not set" and the menu shows the setting the user still has', async () => {
  // The menu kept the pick though nothing was set (not_connected): it said
  // "Do not disturb" to a user everyone else saw as available.
  const alice = pages[0];
  assert.equal(await alice.getByLabel('Show me as').inputValue(), 'auto');
  await server.stop();
  await alice.waitForFunction(() => window.presenceDemo.client.state !== 'open', null, { timeout: 10000 });
  await alice.getByLabel('Show me as').selectOption('dnd');
  await waitFor(async () => /not_connected/.test(await alice.locator('#setting-error').textContent()), { what: '"Not set" shown' });
  await waitFor(async () => (await alice.getByLabel('Show me as').inputValue()) === 'auto', { timeout: 3000, what: 'the menu back to what is set' });
  await alice.screenshot({ path: artifact('status-alice-not-connected.png'), fullPage: true });
});
