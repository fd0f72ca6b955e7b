// SPDX-License-Identifier: MIT
// Two users in two browser contexts against a real presenced (demo mode),
// plus interop checks of the WebSocket server with a real browser's framing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Presenced, freePort, waitFor, sleep, api, request, openEvents, launchChromium, artifact } from './lib.js';

const HEARTBEAT_MS = 500;
const TIMEOUT_MS = 2500;
const IDLE_MS = 1500;

let port;
let server;
let browser;
let ctxA, ctxB, pageA, pageB;
const pages = [];

before(async () => {
  port = await freePort();
  // Short server heartbeat and timeout: a session survives only if the
  // browser answers the server's pings (application pings are off: ping=0).
  server = await new Presenced({ port, args: ['--heartbeat-ms', String(HEARTBEAT_MS), '--timeout-ms', String(TIMEOUT_MS)] }).start();
  browser = await launchChromium();
  ctxA = await browser.newContext({ viewport: { width: 760, height: 560 } });
  ctxB = await browser.newContext({ viewport: { width: 760, height: 560 } });
});

after(async () => {
  for (const p of pages) await p.close().catch(() => {});
  if (browser) await browser.close();
  if (server) await server.stop();
});

function url(params) {
  return 'http://127.0.0.1:' + port + '/?' + new URLSearchParams({ ping: '0', retry: '1000', ...params });
}

// Every answer of 400 or more a page got (a missing favicon included).
const failedResponses = [];

/** Elements with the hidden attribute that still take up space on the page. */
const shownButHidden = (page) => page.evaluate(() =>
  [...document.querySelectorAll('[hidden]')].filter((e) => e.getClientRects().length > 0).map((e) => '#' + e.id));

async function join(ctx, name, params = {}) {
  const page = await ctx.newPage();
  pages.push(page);
  page.on('pageerror', (e) => console.error('[' + name + '] page error:', e.message));
  page.on('response', (r) => { if (r.status() >= 400) failedResponses.push(r.status() + ' ' + r.url()); });
  await page.goto(url(params));
  // Before joining only the join form shows: no half-built "You are" card
  // (a display rule overriding the hidden attribute showed one).
  await page.getByLabel('Your name').waitFor();
  assert.deepEqual(await shownButHidden(page), [], 'hidden sections shown before joining');
  assert.equal(await page.locator('#me').isVisible(), false, 'the "You are" card before joining');
  await page.getByLabel('Your name').fill(name);
  await page.getByRole('button', { name: 'Join' }).click();
  await page.waitForFunction(() => window.presenceDemo && window.presenceDemo.client.state === 'open', null, { timeout: 10000 });
  return page;
}

const statusOf = (page, user) => page.locator(`#roster li[data-user="${user}"]`).getAttribute('data-status', { timeout: 1000 }).catch(() => null);

async function expectStatus(page, user, status, timeout = 8000) {
  await waitFor(async () => (await statusOf(page, user)) === status, { timeout, what: `${user} ${status} on the page` });
}

/** Real mouse moves on a page until stopped (keeps a short idle threshold from firing). */
function keepActive(page) {
  let on = true;
  let x = 10;
  const loop = (async () => {
    while (on) {
      x = x === 10 ? 20 : 10;
      await page.mouse.move(x, 300).catch(() => {});
      await sleep(250);
    }
  })();
  return async () => { on = false; await loop; };
}

const sessionId = (page) => page.evaluate(() => window.presenceDemo.client.sessionId);

async function shot(page, name) {
  const file = artifact(name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

let aliceSession;
let bobSession;

test('each user sees the other come online', async () => {
  pageA = await join(ctxA, 'alice', { idle: String(IDLE_MS) });
  const stop = keepActive(pageA);
  try {
    pageB = await join(ctxB, 'bob');
    await expectStatus(pageB, 'alice', 'online');
    await expectStatus(pageA, 'bob', 'online');
    await expectStatus(pageA, 'alice', 'online');
    assert.equal(await pageA.locator('#my-status').getAttribute('data-status'), 'online');
    assert.match(await pageB.locator('#roster li[data-user="bob"] .name').innerText(), /bob\s*\(you\)/);
    aliceSession = await sessionId(pageA);
    bobSession = await sessionId(pageB);
    assert.ok(aliceSession && bobSession);
    await shot(pageB, '1-both-online-bob.png');
  } finally {
    await stop();
  }
});

test('a user goes idle by inactivity and the other sees it; activity brings it back', async () => {
  await expectStatus(pageB, 'alice', 'idle', IDLE_MS + 6000);
  assert.equal(await pageA.locator('#my-status').getAttribute('data-status'), 'idle');
  assert.match(await pageB.locator('#roster li[data-user="alice"] .detail').innerText(), /^idle/);
  await shot(pageB, '2-alice-idle-bob.png');
  await shot(pageA, '2-alice-idle-alice.png');
  await pageA.mouse.move(100, 100);
  await pageA.mouse.move(120, 110);
  await expectStatus(pageB, 'alice', 'online');
  assert.equal(await pageA.locator('#my-status').getAttribute('data-status'), 'online');
});

test('interop: the browser answers server pings (no timeout with a 500 ms heartbeat, 2.5 s timeout)', async () => {
  // By now several TIMEOUT_MS have passed with application pings off and
  // alice silent while idle: only the browser's pong frames kept her session.
  await sleep(TIMEOUT_MS + 500);
  assert.equal(await sessionId(pageA), aliceSession, 'alice kept her first session');
  assert.equal(await sessionId(pageB), bobSession, 'bob kept his first session');
  const r = await api(port, 'GET', '/v1/users/alice/sessions');
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json.sessions.map((s) => s.session_id), [aliceSession]);
  const m = await api(port, 'GET', '/metrics'); // the API key: /metrics needs it
  assert.equal(m.status, 200, m.body);
  assert.doesNotMatch(m.body, /^presenced_[a-z_]*timeout[a-z_]*(\{[^}]*\})? [1-9]/m, 'no heartbeat timeouts counted');
});

/** In bob's page: a raw WebSocket with bob's demo token, run `script` against it. */
function rawSocket(page, script, arg) {
  return page.evaluate(async ({ script, arg }) => {
    const r = await fetch('/v1/demo/token', { method: 'POST', body: JSON.stringify({ name: 'bob' }) });
    const { token } = await r.json();
    const ws = new WebSocket('ws://' + location.host + '/v1/ws?token=' + encodeURIComponent(token));
    const inbox = [];
    const waiters = [];
    const closed = new Promise((res) => { ws.onclose = (e) => res({ code: e.code, reason: e.reason, wasClean: e.wasClean }); });
    ws.onmessage = (e) => { const m = JSON.parse(e.data); inbox.push(m); waiters.splice(0).forEach((w) => w()); };
    const next = async (pred, ms = 5000) => {
      const end = Date.now() + ms;
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(i, 1)[0];
        if (Date.now() > end) return null;
        await new Promise((res) => { waiters.push(res); setTimeout(res, 100); });
      }
    };
    const welcome = await next((m) => m.type === 'welcome');
    // eslint-disable-next-line no-new-func
    const fn = new Function('ws', 'next', 'closed', 'welcome', 'arg', 'return (async () => {' + script + '})()');
    return fn(ws, next, closed, welcome, arg);
  }, { script, arg });
}

test('interop: a large message (subscribe of ~60 KB, one frame) is answered with a full snapshot', async () => {
  const res = await rawSocket(pageB, `
    const ids = [];
    for (let i = 0; ids.join('","').length < 60000; i++) ids.push('u' + String(i).padStart(5, '0') + '-'.repeat(90));
    const msg = JSON.stringify({ type: 'subscribe', id: 'big', users: ids });
    ws.send(msg);
    const snap = await next((m) => m.id === 'big', 8000);
    ws.close(1000);
    await closed;
    return { bytes: msg.length, sent: ids.length, got: snap && snap.users.length, type: snap && snap.type, offline: snap && snap.users.every((u) => u.status === 'offline') };
  `);
  assert.ok(res.bytes > 60000 && res.bytes < 65536, 'message size ' + res.bytes);
  assert.equal(res.type, 'presence');
  assert.equal(res.got, res.sent);
  assert.ok(res.offline);
});

test('interop: a message over the frame limit (200 KB) gets close 1009, the page session is unaffected', async () => {
  const res = await rawSocket(pageB, `
    const ids = [];
    for (let i = 0; ids.join('","').length < 200000; i++) ids.push('v' + String(i).padStart(5, '0') + '-'.repeat(120));
    ws.send(JSON.stringify({ type: 'subscribe', id: 'huge', users: ids }));
    const c = await Promise.race([closed, new Promise((r) => setTimeout(() => r(null), 8000))]);
    const answer = await next((m) => m.id === 'huge', 10);
    return { close: c, answer: answer && (answer.type + ':' + (answer.code || answer.users.length)) };
  `);
  // Chromium sends a message as a single frame; 200 KB is over --max-frame
  // (64 KiB), so the server must close with 1009 (protocol.md 1.3).
  assert.ok(res.close, 'connection closed, answer: ' + res.answer);
  assert.equal(res.close.code, 1009, JSON.stringify(res));
  assert.equal(await sessionId(pageB), bobSession);
});

test('interop: clean close handshake; the server ends the session with reason disconnect', async () => {
  const sse = openEvents(port);
  try {
    await sleep(300);
    const res = await rawSocket(pageB, `
      ws.close(1000, 'bye');
      return { close: await closed, session: welcome.session_id };
    `);
    // The server echoes the code (RFC 6455 5.5.1; the reason is optional).
    assert.equal(res.close.code, 1000, JSON.stringify(res.close));
    assert.equal(res.close.wasClean, true, 'the server answered the close frame before closing TCP');
    const ev = await waitFor(() => sse.events.find((e) => e.type === 'session.disconnected' && e.session_id === res.session), { timeout: 5000, what: 'session.disconnected event' });
    assert.equal(ev.reason, 'disconnect');
    assert.equal(ev.user_id, 'bob');
  } finally {
    sse.close();
  }
});

test('a tab closes and the other sees it offline with a last-seen time', async () => {
  const before = Date.now();
  await pageA.close();
  await expectStatus(pageB, 'alice', 'offline');
  const li = pageB.locator('#roster li[data-user="alice"]');
  assert.match(await li.locator('.detail').innerText(), /last seen (just now|\d+ seconds? ago)/);
  const lastSeen = Number(await li.getAttribute('data-last-seen'));
  assert.ok(lastSeen >= before - 5000 && lastSeen <= Date.now() + 1000, 'last_seen ' + lastSeen);
  // The relative time moves on by itself.
  await waitFor(async () => /last seen \d+ seconds ago/.test(await li.locator('.detail').innerText()), { timeout: 9000, what: 'last seen N seconds ago' });
  await shot(pageB, '3-alice-offline-bob.png');
});

test('after presenced restarts on the same port, both pages reconnect and the roster is restored', async () => {
  pageA = await join(ctxA, 'alice', { idle: '60000' });
  await expectStatus(pageB, 'alice', 'online');
  await expectStatus(pageA, 'bob', 'online');
  const oldA = await sessionId(pageA);
  const exit = await server.stop('SIGTERM');
  assert.equal(exit.code, 0, 'presenced exits 0 on SIGTERM');
  await pageB.waitForFunction(() => window.presenceDemo.client.state !== 'open', null, { timeout: 5000 });
  await shot(pageB, '4-server-down-bob.png');
  server = await new Presenced({ port, args: ['--heartbeat-ms', String(HEARTBEAT_MS), '--timeout-ms', String(TIMEOUT_MS)] }).start();
  for (const p of [pageA, pageB]) await p.waitForFunction(() => window.presenceDemo.client.state === 'open', null, { timeout: 15000 });
  await expectStatus(pageB, 'alice', 'online');
  await expectStatus(pageA, 'bob', 'online');
  await expectStatus(pageA, 'alice', 'online');
  assert.notEqual(await sessionId(pageA), oldA, 'a new session on the new server');
  const r = await request(port, 'GET', '/v1/demo/users');
  assert.deepEqual(r.json.users.map((u) => u.user_id).sort(), ['alice', 'bob']);
  assert.equal(await pageB.locator('#conn').getAttribute('data-state'), 'open');
  await shot(pageB, '5-after-restart-bob.png');
  await shot(pageA, '5-after-restart-alice.png');
});

test('the page is served with the module and the copy of presence.js', async () => {
  const r = await request(port, 'GET', '/presence.js');
  assert.equal(r.status, 200);
  const app = await request(port, 'GET', '/app.js');
  assert.match(app.body, /from '\.\/presence\.js'/);
});

test('a newcomer appears on the others\' rosters at once, pushed, with no polling', async () => {
  // Requests pageA makes from here on: the roster must not poll for users.
  const polls = [];
  const onRequest = (r) => { if (r.url().includes('/v1/demo/users')) polls.push(Date.now()); };
  pageA.on('request', onRequest);
  try {
    const ctxC = await browser.newContext({ viewport: { width: 760, height: 560 } });
    const t0 = Date.now();
    const pageC = await join(ctxC, 'carol');
    // Well within the 3 s poll the page used to rely on.
    await expectStatus(pageA, 'carol', 'online', 1500);
    await expectStatus(pageB, 'carol', 'online', 1500);
    console.log('# carol on alice\'s roster ' + (Date.now() - t0) + ' ms after her page opened');
    await shot(pageA, '6-newcomer-alice.png');
    await sleep(3500);
    assert.deepEqual(polls, [], 'the page asked for the user list while connected');
    await pageC.close();
    await ctxC.close();
  } finally {
    pageA.off('request', onRequest);
  }
});

test('the page has a favicon and no request of any page failed', async () => {
  const icon = await pageA.evaluate(async () => {
    const link = document.querySelector('link[rel="icon"]');
    if (!link) return null;
    const r = await fetch(link.href);
    return { status: r.status, type: r.headers.get('content-type') };
  });
  assert.ok(icon, 'a <link rel="icon"> (else browsers ask for /favicon.ico)');
  assert.equal(icon.status, 200);
  assert.match(icon.type, /^image\//);
  assert.deepEqual(failedResponses, []);
});
