// SPDX-License-Identifier: MIT
// Day one of a frontend team: its page is served by its own dev server (here
// a tiny one on another port), not by presenced, and connects with a token
// its backend signs, as clients/js/README.md and docs/getting-started.md say.
// presenced refuses the WebSocket (403 origin_not_allowed) until the page's
// origin is in --allowed-origins; a browser shows the page only a 1006, so
// the client's 'error' event must say where to look. With the origin
// allowed the same page connects.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { Presenced, freePort, waitFor, launchChromium, ROOT } from './lib.js';

const SECRET = 'origin-test-secret-0123456789-abcdef';
let browser;
let site;
let sitePort;
const servers = [];

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function sign(claims) {
  const head = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
  return head + '.' + crypto.createHmac('sha256', SECRET).update(head).digest('base64url');
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>day one</title><pre id="log"></pre>
<script type="module">
import { PresenceClient } from '/presence.js';
const q = new URLSearchParams(location.search);
window.errors = [];
const presence = new PresenceClient({
  url: q.get('ws'),
  getToken: async () => (await (await fetch('/api/presence-token')).json()).token,
  reconnect: { initialDelayMs: 200, maxDelayMs: 500 },
});
presence.on('error', (e) => { window.errors.push(e.kind + ' ' + (e.code || '') + ' ' + e.message); });
window.presence = presence;
presence.connect();
</script>`;

before(async () => {
  sitePort = await freePort();
  site = http.createServer((req, res) => {
    if (req.url === '/presence.js') {
      res.setHeader('Content-Type', 'text/javascript');
      return res.end(fs.readFileSync(path.join(ROOT, 'clients/js/presence.js')));
    }
    if (req.url === '/api/presence-token') {
      res.setHeader('Content-Type', 'application/json');
      return res.end(JSON.stringify({ token: sign({ sub: 'dana', exp: Math.floor(Date.now() / 1000) + 600 }) }));
    }
    res.setHeader('Content-Type', 'text/html');
    res.end(PAGE);
  });
  await new Promise((r) => site.listen(sitePort, '127.0.0.1', r));
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  for (const s of servers) await s.stop();
  if (site) site.close();
});

async function server(args) {
  const s = await new Presenced({ port: await freePort(), args: ['--jwt-secret', SECRET, ...args] }).start();
  servers.push(s);
  return s;
}

async function openPage(srv) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`http://127.0.0.1:${sitePort}/?ws=` + encodeURIComponent(`ws://127.0.0.1:${srv.port}/v1/ws`));
  return page;
}

test('a page on another origin, not allowed: the error event names the cause, not only 1006', async () => {
  const srv = await server([]);
  const page = await openPage(srv);
  const errors = await waitFor(async () => {
    const e = await page.evaluate(() => window.errors);
    return e.length ? e : null;
  }, { timeout: 8000, what: 'an error event' });
  assert.match(errors[0], /^socket 1006 could not connect to ws:\/\/127\.0\.0\.1:\d+\/v1\/ws: /);
  assert.match(errors[0], /--allowed-origins/);
  assert.notEqual(await page.evaluate(() => window.presence.state), 'open');
  assert.match(srv.log, /origin_not_allowed: HTTP 403/);
  await page.close();
});

test('the same page with its origin in --allowed-origins connects, no error', async () => {
  const srv = await server(['--allowed-origins', `http://127.0.0.1:${sitePort}`]);
  const page = await openPage(srv);
  await page.waitForFunction(() => window.presence.state === 'open', null, { timeout: 8000 });
  assert.equal(await page.evaluate(() => window.presence.userId), 'dana');
  assert.deepEqual(await page.evaluate(() => window.errors), []);
  await page.close();
});
