// SPDX-License-Identifier: MIT
// Rooms on the demo page in Chromium: two users, two rooms. Each sees who is
// in each room (name and colour from the member's data), live; leaving a
// room and closing a tab reach the other. Screenshots in artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Presenced, freePort, waitFor, api, launchChromium, artifact } from './lib.js';

let port;
let server;
let browser;
const pages = [];

before(async () => {
  port = await freePort();
  server = await new Presenced({ port }).start();
  browser = await launchChromium();
});

after(async () => {
  for (const p of pages) await p.close().catch(() => {});
  if (browser) await browser.close();
  if (server) await server.stop();
});

async function join(name) {
  const ctx = await browser.newContext({ viewport: { width: 760, height: 760 } });
  const page = await ctx.newPage();
  pages.push(page);
  page.on('pageerror', (e) => console.error('[' + name + '] page error:', e.message));
  await page.goto('http://127.0.0.1:' + port + '/?' + new URLSearchParams({ ping: '0', retry: '1000' }));
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Join' }).click();
  await page.waitForFunction(() => window.presenceDemo && window.presenceDemo.rooms && window.presenceDemo.client.state === 'open', null, { timeout: 10000 });
  return page;
}

async function enterRoom(page, room, { pick = false } = {}) {
  if (pick) {
    await page.locator(`[data-pick-room="${room}"]`).click();
  } else {
    await page.getByLabel('Room', { exact: true }).fill(room);
    await page.getByRole('button', { name: 'Enter', exact: true }).click();
  }
}

const membersOf = (page, room) => page.locator(`.room[data-room="${room}"] li`).evaluateAll(
  (lis) => lis.map((li) => ({ user: li.dataset.user, status: li.dataset.status, color: li.dataset.color, name: li.querySelector('.name').textContent })));

async function expectMembers(page, room, users, what) {
  await waitFor(async () => JSON.stringify((await membersOf(page, room)).map((m) => m.user)) === JSON.stringify(users),
    { timeout: 8000, what });
}

test('two users in two rooms see each other, with name and colour, live', async () => {
  const ann = await join('ann');
  const bob = await join('bob');
  await enterRoom(ann, 'lobby', { pick: true });
  await enterRoom(ann, 'design');
  await enterRoom(bob, 'lobby');
  await expectMembers(ann, 'lobby', ['ann', 'bob'], 'ann sees bob arrive in lobby');
  await expectMembers(bob, 'lobby', ['ann', 'bob'], 'bob sees ann already in lobby (snapshot)');
  await expectMembers(ann, 'design', ['ann'], 'ann alone in design');
  const lobby = await membersOf(bob, 'lobby');
  const a = lobby.find((m) => m.user === 'ann');
  assert.equal(a.name, 'ann', 'the name comes from the member data');
  assert.match(a.color, /^hsl\(/, 'the colour comes from the member data');
  assert.equal(await bob.locator('.room[data-room="lobby"]').getAttribute('data-count'), '2');
  // The backend sees the same rooms (beside the page's own roster channel,
  // demo-lobby, which every tab joins: web/app.js).
  const r = await api(port, 'GET', '/v1/channels?prefix=');
  assert.deepEqual(JSON.parse(r.body).channels.filter((c) => c.channel !== 'demo-lobby'),
    [{ channel: 'design', count: 1, shown_count: 1 }, { channel: 'lobby', count: 2, shown_count: 2 }]);
  await ann.screenshot({ path: artifact('rooms-ann.png'), fullPage: true });
  await bob.screenshot({ path: artifact('rooms-bob.png'), fullPage: true });
  // bob goes invisible: ann's lobby shows her alone, "1 here" (an invisible
  // member is neither listed nor counted); the backend sees both counts.
  await bob.getByLabel('Show me as').selectOption('invisible');
  await expectMembers(ann, 'lobby', ['ann'], 'bob invisible: gone from ann\'s lobby');
  await waitFor(async () => (await ann.locator('.room[data-room="lobby"]').getAttribute('data-count')) === '1',
    { timeout: 8000, what: 'ann\'s lobby counts 1 while bob is invisible' });
  const r2 = await api(port, 'GET', '/v1/channels?prefix=lobby');
  assert.deepEqual(JSON.parse(r2.body).channels, [{ channel: 'lobby', count: 2, shown_count: 1 }]);
  await ann.screenshot({ path: artifact('rooms-ann-bob-invisible.png'), fullPage: true });
  // bob's own page counts what the others see, "1 here" (README: invisible
  // members are not counted, ourselves included), and still lists him. It
  // said "2 here" until the room's next change: presenced sent his own
  // sessions nothing when he went invisible.
  await waitFor(async () => (await bob.locator('.room[data-room="lobby"]').getAttribute('data-count')) === '1',
    { timeout: 8000, what: 'bob\'s own lobby counts 1 while he is invisible' });
  assert.deepEqual((await membersOf(bob, 'lobby')).map((m) => m.user), ['ann', 'bob']);
  await bob.getByLabel('Show me as').selectOption('auto');
  await expectMembers(ann, 'lobby', ['ann', 'bob'], 'bob visible again in ann\'s lobby');
  await waitFor(async () => (await ann.locator('.room[data-room="lobby"]').getAttribute('data-count')) === '2',
    { timeout: 8000, what: 'ann\'s lobby counts 2 again' });
  await waitFor(async () => (await bob.locator('.room[data-room="lobby"]').getAttribute('data-count')) === '2',
    { timeout: 8000, what: 'bob\'s own lobby counts 2 again' });
  assert.equal((await membersOf(bob, 'lobby')).find((m) => m.user === 'bob').status, 'online');
  // bob enters design: ann sees him there too.
  await enterRoom(bob, 'design', { pick: true });
  await expectMembers(ann, 'design', ['ann', 'bob'], 'ann sees bob enter design');
  // bob leaves lobby: ann sees it, bob's lobby card goes.
  await bob.getByRole('button', { name: 'Leave lobby' }).click();
  await expectMembers(ann, 'lobby', ['ann'], 'ann sees bob leave lobby');
  assert.equal(await bob.locator('.room[data-room="lobby"]').count(), 0);
  // bob's tab closes: he leaves design for ann.
  await bob.close();
  await expectMembers(ann, 'design', ['ann'], 'ann sees bob gone from design after his tab closed');
  await ann.screenshot({ path: artifact('rooms-ann-after.png'), fullPage: true });
});
