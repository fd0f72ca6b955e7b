// SPDX-License-Identifier: MIT
// Test helpers: a real presenced (PRESENCED, else build/presenced of the
// repository) on a free loopback port, stopped by its pid; a WebSocket user.
import { spawn } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { BackendConnection, PresenceAPI, mintToken } from '../index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../../..');
export const PRESENCED = process.env.PRESENCED ? path.resolve(process.env.PRESENCED) : path.join(ROOT, 'build/presenced');
export const API_KEY = 'sdk-node-test-key-0123456789-abcdef';
export const JWT_SECRET = 'sdk-node-jwt-secret-0123456789-abcd';
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Ports 12000-13999: below Linux's ephemeral range (32768-60999), where a
// port bound to 0 and closed again would sit, free for any outgoing
// connection (another suite's, run beside this one by ctest) to take before
// presenced binds it; and apart from the other suites' own ranges (the
// Python SDK 14000-15999, the Go SDK 16000-17999, the browser 18000-19999,
// the integration suites 23000-29999).
const given = new Set(); // ports handed out already: a caller may take several before binding any
export async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = 12000 + Math.floor(Math.random() * 2000);
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
  throw new Error('freePort: no free port in 12000-13999');
}

/**
 * Whether process pid holds a TCP socket listening on port (Linux /proc).
 * node --test runs each file in a process of its own, each with its own
 * record of the ports it gave out: two files can pick the same port, and
 * while the second's presenced fails to bind it, the first's answers
 * /healthz; the second file then ran its tests against the first's
 * presenced (another log capacity, another file's users).
 */
function listensOn(pid, port) {
  const inodes = new Set();
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]);
      } catch (_) { /* closed meanwhile */ }
    }
  } catch (_) {
    return false;
  }
  const want = ':' + port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try { text = fs.readFileSync(table, 'utf8'); } catch (_) { continue; }
    for (const line of text.split('\n').slice(1)) {
      const col = line.trim().split(/\s+/);
      // local address, state 0A (LISTEN), inode
      if (col.length > 9 && col[1].endsWith(want) && col[3] === '0A' && inodes.has(col[9])) return true;
    }
  }
  return false;
}

export async function waitFor(fn, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    let last;
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > end) throw new Error('timed out waiting for ' + what + (last instanceof Error ? ': ' + last.message : ''));
    await sleep(interval);
  }
}

export class Presenced {
  constructor(args = []) { this.args = args; this.log = ''; }
  get url() { return `http://127.0.0.1:${this.port}`; }
  async start() {
    if (!fs.existsSync(PRESENCED)) throw new Error(`presenced not found at ${PRESENCED} (set PRESENCED)`);
    // A port taken between freePort() and presenced's bind: it exits at
    // once, and a port of its own choosing is tried again (a restart keeps
    // the port it was given).
    const fixed = Boolean(this.port);
    for (let attempt = 1; ; attempt++) {
      if (!fixed) this.port = await freePort();
      try {
        return await this.startOnce();
      } catch (e) {
        if (fixed || attempt === 3 || !/address already in use/i.test(this.log)) throw e;
      }
    }
  }
  async startOnce() {
    this.log = '';
    this.proc = spawn(PRESENCED, ['--listen', `127.0.0.1:${this.port}`, '--api-key', API_KEY,
      '--jwt-secret', JWT_SECRET, '--log-level', 'warn', '--offline-grace-ms', '0', ...this.args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const grab = (c) => { this.log = (this.log + c).slice(-100000); };
    this.proc.stdout.setEncoding('utf8').on('data', grab);
    this.proc.stderr.setEncoding('utf8').on('data', grab);
    this.exited = new Promise((r) => this.proc.once('exit', (code, sig) => r({ code, sig })));
    const closed = new Promise((r) => this.proc.once('close', r)); // its output read to the end
    const up = await waitFor(async () => {
      if (this.proc.exitCode !== null) return 'exited';
      const r = await fetch(this.url + '/healthz');
      // The answer must be this presenced's (listensOn).
      return r.status === 200 && listensOn(this.proc.pid, this.port) && 'up';
    }, { what: 'presenced /healthz' });
    if (up === 'exited') {
      await closed;
      throw new Error('presenced exited: ' + this.log);
    }
    return this;
  }
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

/** A user's WebSocket session; resolves once `welcome` arrived. */
export function connectUser(pd, userId, claims = {}, secret = JWT_SECRET) {
  const token = mintToken({ secret, userId, ...claims });
  const ws = new WebSocket(`ws://127.0.0.1:${pd.port}/v1/ws?token=${token}`);
  ws.messages = [];
  ws.closed = new Promise((r) => ws.once('close', (code) => r(code)));
  return new Promise((resolve, reject) => {
    ws.on('message', (m) => {
      const msg = JSON.parse(m.toString());
      ws.messages.push(msg);
      if (msg.type === 'welcome') { ws.sessionId = msg.session_id; resolve(ws); }
    });
    ws.once('unexpected-response', (_req, res) => {
      let b = ''; res.on('data', (c) => { b += c; }); res.on('end', () => reject(Object.assign(new Error(b), { status: res.statusCode, body: b })));
    });
    ws.once('error', reject);
  });
}

/** A TCP relay to presenced whose open connections can be frozen: bytes and closes stop, sockets stay open. */
export async function relay(port) {
  const pairs = [];
  const server = net.createServer((c) => {
    const up = net.connect(port, '127.0.0.1');
    const pair = { c, up, frozen: false };
    pairs.push(pair);
    c.on('data', (d) => { if (!pair.frozen) up.write(d); });
    up.on('data', (d) => { if (!pair.frozen) c.write(d); });
    // A frozen path passes no FIN or RST either: the other side stays open.
    c.on('error', () => { if (!pair.frozen) up.destroy(); });
    up.on('error', () => { if (!pair.frozen) c.destroy(); });
    c.on('close', () => { if (!pair.frozen) up.destroy(); });
    up.on('close', () => { if (!pair.frozen) c.destroy(); });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    freeze: () => { for (const p of pairs) p.frozen = true; },
    close: () => { for (const p of pairs) { p.c.destroy(); p.up.destroy(); } server.close(); },
  };
}

/**
 * The set-up the backend connection's suites share: a presenced of the
 * file's own (started before, stopped after), an API client, whether it has
 * the backend session connection (a presenced without it answers 404 to
 * GET /v1/origins), and mk(t, opts): a BackendConnection ended after the
 * test whatever happens (bounded: a failed test may leave it in any state,
 * and must not leave it reconnecting).
 */
export function backendSuite(hooks) {
  const s = { pd: new Presenced(), api: null, supported: false };
  hooks.before(async () => {
    await s.pd.start();
    s.api = new PresenceAPI({ url: s.pd.url, apiKey: API_KEY });
    const r = await fetch(`${s.pd.url}/v1/origins`, { headers: { Authorization: `Bearer ${API_KEY}` } });
    s.supported = r.status === 200;
  });
  hooks.after(() => s.pd.stop());
  s.mk = (t, opts) => {
    const b = new BackendConnection({ url: s.pd.url, apiKey: API_KEY, ...opts });
    t.after(() => Promise.race([b.end({ bye: true }).catch(() => {}), sleep(3000)]));
    return b;
  };
  s.skipUnlessSupported = (t) => {
    if (!s.supported) { t.skip('this presenced has no backend session connection (GET /v1/origins: 404)'); return true; }
    return false;
  };
  return s;
}

/**
 * A private redis-server (none: null, for the test to skip) on a unix
 * socket in a directory of its own, no persistence: no port to collide with
 * the other suites'. `store` is the --store value of the presenced instances
 * that share it; stop() ends it by its pid.
 */
export async function startRedis() {
  const exe = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => fs.existsSync(p));
  if (!exe) return null;
  const dir = fs.mkdtempSync(path.join((await import('node:os')).tmpdir(), 'sdk-node-redis-'));
  const sock = path.join(dir, 'redis.sock');
  const proc = spawn(exe, ['--port', '0', '--unixsocket', sock, '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' });
  const exited = new Promise((r) => proc.once('exit', r));
  const ping = () => new Promise((resolve) => {
    const c = net.connect(sock);
    c.once('error', () => resolve(false));
    c.once('data', (d) => { c.destroy(); resolve(String(d).startsWith('+PONG')); });
    c.write('PING\r\n');
  });
  await waitFor(ping, { what: 'redis-server PING', timeout: 5000 });
  return {
    store: `unix:${sock}`,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid, 'SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
