#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// The Node SDK's backend session connection against one presenced (issue 16's
// figure: >= 100,000 session operations/s), beside the same operations sent
// as ready-made frames by a bare `ws` client (what presenced takes from one
// connection, without the SDK's bookkeeping).
//
//   node bench/sdk_node_backend.js [--presenced build/presenced] [--sessions 100000] [--rounds 3] [--max-ops 1000]
//
// Each round, per client: open S sessions (S users), set each idle, then
// online, then close them: 4*S operations, timed from the first op to the
// last ack. Medians over rounds, the two clients interleaved (A B, B A, ...).
// Uses sdk/node's node_modules (scripts/npm-ci.sh sdk/node).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []));
const PRESENCED = path.resolve(args.presenced || path.join(root, 'build/presenced'));
const S = Number(args.sessions || 100000);
const ROUNDS = Number(args.rounds || 3);
const MAX_OPS = Number(args['max-ops'] || 1000);   // ops per frame, both clients
const KEY = 'bench-key-of-at-least-32-bytes-0123456789';

const { BackendConnection } = await import(pathToFileURL(path.join(root, 'sdk/node/index.js')));
const { WebSocket } = await import(pathToFileURL(path.join(root, 'sdk/node/node_modules/ws/wrapper.mjs')));

const port = await new Promise((r) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
const pd = spawn(PRESENCED, ['--listen', `127.0.0.1:${port}`, '--api-key', KEY, '--log-level', 'warn',
  '--offline-grace-ms', '0', '--max-connections', '1000'], { stdio: ['ignore', 'inherit', 'inherit'] });
const url = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try { if ((await fetch(url + '/healthz')).ok) break; } catch (_) { /* not yet */ }
  if (i > 200) throw new Error('presenced did not start');
  await new Promise((r) => setTimeout(r, 50));
}

// CPU seconds of presenced (utime + stime from /proc) and of this process, so
// that each figure comes with its cost per operation on each side: on a
// loaded machine wall-clock rates fall, CPU per operation much less.
const TCK = 100;
const pdCpu = () => { const f = fs.readFileSync(`/proc/${pd.pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / TCK; };
const myCpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const cost = [];
async function measured(kind, fn, round) {
  const p0 = pdCpu(), m0 = myCpu();
  const rate = await fn(round);
  cost.push({ kind, pdUs: ((pdCpu() - p0) / (4 * S)) * 1e6, clientUs: ((myCpu() - m0) / (4 * S)) * 1e6 });
  return rate;
}

async function sdkRound(round) {
  const b = new BackendConnection({ url, apiKey: KEY, origin: `sdk-${round}`, maxOps: MAX_OPS });
  await b.connect();
  const t0 = process.hrtime.bigint();
  const ids = new Array(S);
  for (let i = 0; i < S; i++) ids[i] = b.open(`u${round}-${i}`, { session: `s${round}-${i}` });
  for (let i = 0; i < S; i++) b.setStatus(ids[i], 'idle');
  for (let i = 0; i < S; i++) b.setStatus(ids[i], 'online');
  for (let i = 0; i < S; i++) b.close(ids[i]);
  await b.flush();
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (b.stats.opErrors) throw new Error(`${b.stats.opErrors} ops refused`);
  await b.end({ bye: true });
  return (4 * S) / s;
}

async function rawRound(round) {
  const maxOps = MAX_OPS;
  const frames = [];
  let seq = 0;
  const kinds = [(i) => ({ op: 'open', session: `r${round}-${i}`, user: `v${round}-${i}` }),
    (i) => ({ op: 'status', session: `r${round}-${i}`, status: 'idle' }),
    (i) => ({ op: 'status', session: `r${round}-${i}`, status: 'online' }),
    (i) => ({ op: 'close', session: `r${round}-${i}` })];
  for (const k of kinds) {
    for (let i = 0; i < S; i += maxOps) {
      const ops = [];
      for (let j = i; j < Math.min(S, i + maxOps); j++) ops.push(k(j));
      frames.push(JSON.stringify({ type: 'batch', seq: ++seq, ops }));
    }
  }
  const ws = new WebSocket(`${url.replace('http', 'ws')}/v1/backend?origin=raw-${round}`, { headers: { Authorization: `Bearer ${KEY}` }, perMessageDeflate: false });
  await new Promise((r, j) => { ws.once('message', r); ws.once('error', j); });   // welcome
  let errors = 0;
  const done = new Promise((resolve) => ws.on('message', (m) => {
    const a = JSON.parse(m);
    if (a.errors) errors += a.errors.length;
    if (a.type === 'ack' && a.seq === seq) resolve();
  }));
  const t0 = process.hrtime.bigint();
  for (const f of frames) ws.send(f);
  await done;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (errors) throw new Error(`${errors} ops refused`);
  ws.send('{"type":"bye"}');
  await new Promise((r) => ws.once('close', r));
  return (4 * S) / s;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sdk = [], raw = [];
try {
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) { sdk.push(await measured('sdk', sdkRound, r)); raw.push(await measured('raw', rawRound, r)); }
    else { raw.push(await measured('raw', rawRound, r)); sdk.push(await measured('sdk', sdkRound, r)); }
  }
} finally {
  pd.kill('SIGTERM');
}
const f = (x) => Math.round(x).toLocaleString('en-US');
console.log(`sessions per round ${S}, rounds ${ROUNDS}, ops per round ${4 * S} (open, idle, online, close), ops per frame ${MAX_OPS}`);
console.log(`node sdk BackendConnection: median ${f(median(sdk))} ops/s  (rounds: ${sdk.map(f).join(', ')})`);
console.log(`bare ws, prebuilt frames:   median ${f(median(raw))} ops/s  (rounds: ${raw.map(f).join(', ')})`);
const us = (kind, side) => median(cost.filter((c) => c.kind === kind).map((c) => c[side])).toFixed(2);
console.log(`CPU per op (medians): sdk client ${us('sdk', 'clientUs')} us, presenced ${us('sdk', 'pdUs')} us; bare client ${us('raw', 'clientUs')} us, presenced ${us('raw', 'pdUs')} us`);
console.log(`one core each would carry: sdk client ${f(1e6 / us('sdk', 'clientUs'))} ops/s, presenced ${f(1e6 / us('sdk', 'pdUs'))} ops/s`);
console.log(`load average while measured: ${fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} on ${(await import('node:os')).cpus().length} cores`);
console.log(`sdk / bare: ${(median(sdk) / median(raw)).toFixed(2)}; target >= 100,000 ops/s: ${median(sdk) >= 100000 ? 'MET' : 'MISS'}`);
