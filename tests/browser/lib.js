// SPDX-License-Identifier: MIT
// Shared helpers of the browser and node tests: a real presenced on a free
// loopback port (stopped by pid), chromium via playwright-core, SSE reader.
import { spawn } from 'node:child_process';
import net from 'node:net';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export const ARTIFACTS = path.join(HERE, 'artifacts');
export const API_KEY = 'browser-test-key-0123456789-abcdefgh';
export const PRESENCED = process.env.PRESENCED ? path.resolve(process.env.PRESENCED) : path.join(ROOT, 'build/presenced');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Ports 18000-19999: below Linux's ephemeral range (32768-60999), where a
// port bound to 0 and closed again would sit, free for any outgoing
// connection (another suite's, run beside this one by ctest) to take before
// presenced binds it; and apart from the other suites' own ranges (the SDKs
// 12000-17999, the integration suites 23000-29999).
const given = new Set(); // ports handed out already: a caller may take several before binding any
export async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = 18000 + Math.floor(Math.random() * 2000);
    if (given.has(port)) continue;
    const ok = await new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) {
      given.add(port);
      return port;
    }
  }
  throw new Error('freePort: no free port in 18000-19999');
}

export async function waitFor(fn, { timeout = 10000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) { last = e; }
    if (Date.now() > end) throw new Error('timed out waiting for ' + what + (last instanceof Error ? ': ' + last.message : ''));
    await sleep(interval);
  }
}

export function request(port, method, p, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: { ...(data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {}), ...headers }, timeout: 5000 }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { buf += c; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(buf); } catch (_) { /* not JSON */ }
        resolve({ status: res.statusCode, body: buf, json });
      });
    });
    req.on('timeout', () => req.destroy(new Error('request timeout')));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

export const api = (port, method, p, body) => request(port, method, p, body, { Authorization: 'Bearer ' + API_KEY });

/** A presenced process on 127.0.0.1:port, with --demo unless args hold --jwt-secret. */
export class Presenced {
  constructor({ port, args = [] }) {
    this.port = port;
    this.args = args;
    this.proc = null;
    this.log = '';
  }
  get base() { return 'http://127.0.0.1:' + this.port; }
  async start() {
    if (!fs.existsSync(PRESENCED)) throw new Error('presenced not found at ' + PRESENCED + ' (set PRESENCED)');
    // Demo mode signs with its own random secret and refuses a configured
    // one: a test that signs its own tokens (--jwt-secret) runs without it.
    const demo = this.args.includes('--jwt-secret') ? [] : ['--demo'];
    const argv = ['--listen', '127.0.0.1:' + this.port, ...demo, '--web-root', path.join(ROOT, 'web'),
      '--api-key', API_KEY, '--log-level', 'warn',
      // The tests watch a closed tab go offline at once, not after the
      // default 10 s offline grace; a test may pass its own after this.
      '--offline-grace-ms', '0', ...this.args];
    this.proc = spawn(PRESENCED, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    const grab = (c) => { this.log += c; if (this.log.length > 200000) this.log = this.log.slice(-100000); };
    this.proc.stdout.setEncoding('utf8').on('data', grab);
    this.proc.stderr.setEncoding('utf8').on('data', grab);
    this.exited = new Promise((r) => this.proc.once('exit', (code, sig) => r({ code, sig })));
    await waitFor(async () => {
      if (this.proc.exitCode !== null) throw new Error('presenced exited: ' + this.log);
      const r = await request(this.port, 'GET', '/healthz');
      return r.status === 200;
    }, { timeout: 10000, what: 'presenced /healthz' });
    return this;
  }
  /** SIGTERM (or the given signal), SIGKILL after 5 s; resolves with the exit. */
  async stop(signal = 'SIGTERM') {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return this.exited;
    process.kill(p.pid, signal);
    const t = setTimeout(() => { try { process.kill(p.pid, 'SIGKILL'); } catch (_) { /* gone */ } }, 5000);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

/** Reads GET /v1/events; .events holds the parsed events seen so far. */
export function openEvents(port) {
  const events = [];
  let res = null;
  const req = http.get({ host: '127.0.0.1', port, path: '/v1/events', headers: { Authorization: 'Bearer ' + API_KEY, Accept: 'text/event-stream' } }, (r) => {
    res = r;
    let buf = '';
    r.setEncoding('utf8');
    r.on('data', (c) => {
      buf += c;
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (data) { try { events.push(JSON.parse(data)); } catch (_) { /* not JSON */ } }
      }
    });
    r.on('error', () => {});
  });
  req.on('error', () => {});
  return { events, close: () => { req.destroy(); if (res) res.destroy(); } };
}

/** Launch Debian's chromium with a fresh profile directory (playwright-core, no download). */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  // playwright creates a fresh --user-data-dir under the temp dir for every
  // launch (and refuses one in args); point the temp dir at a fresh
  // directory of our own so nothing is shared with other runs.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'presenced-browser-'));
  const prevTmp = process.env.TMPDIR;
  process.env.TMPDIR = tmp;
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  } finally {
    if (prevTmp === undefined) delete process.env.TMPDIR; else process.env.TMPDIR = prevTmp;
  }
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close().catch(() => {});
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  return browser;
}

export function artifact(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}
