// SPDX-License-Identifier: MIT
// Type-checked (never run) under tsc --strict: the declarations describe the
// SDK as its README uses it, and misuse is refused.
import express from 'express';
import { mintToken, PresenceAPI, PresenceError, webhookMiddleware, type StreamItem } from '../../index.js';

const token: string = mintToken({ secret: 's', userId: 'alice', ttlSeconds: 600, watch: '*', meta: { device: 'web' } });
const api = new PresenceAPI({ url: 'http://127.0.0.1:7070', apiKey: 'k' });

async function main() {
  const u = await api.getUser('alice');
  const s: 'online' | 'idle' | 'offline' = u.status;
  for await (const item of api.events({ after: 42, readTimeoutMs: 60000 })) {
    const it: StreamItem = item;
    if (it.gap) console.log(it.data.oldest);
    else console.log(it.seq, it.data.user_id, it.data.reason);
  }
  try { await api.kick('x'); } catch (e) { if (e instanceof PresenceError && e.code === 'no_session') console.log(e.status); }
  void s; void token;
}
void main;

const app = express();
app.post('/hook', webhookMiddleware({ secret: 's' }), (req, res) => {
  for (const e of req.presence!.events) console.log(e.type, e.seq);
  res.sendStatus(204);
});

// @ts-expect-error userId is required
mintToken({ secret: 's' });
// @ts-expect-error watch is '*' or a list
mintToken({ secret: 's', userId: 'a', watch: 'bob' });

import { BackendConnection, trackSocketIO, type BackendWelcome } from '../../index.js';
const backend = new BackendConnection({ url: 'http://127.0.0.1:7070', apiKey: 'k', origin: 'api-1' });
backend.connect().then((w: BackendWelcome) => console.log(w.resumed));
const sid: string = backend.open('alice', { device: 'web', meta: { name: 'Alice' } });
backend.setStatus(sid, 'idle');
backend.join(sid, 'room:1', { color: 'red' });
backend.on('rejected', ({ op, code }) => console.log(op.op, code));
backend.on('left', ({ session, user, channel, reason, code, message }) => console.log(session, user, channel, reason === 'kicked', reason === 'refused', code === 'too_many_channels', message));
// 'fatal' is a PresenceError: its retryable tells origin_taken_over (false) from a network error.
backend.on('fatal', (e) => console.log(e.code === 'origin_taken_over', e.retryable, e.status));
// @ts-expect-error a session status is online or idle
backend.setStatus(sid, 'away');
trackSocketIO(backend, { on() {}, off() {} }, (socket) => socket.handshake.auth.userId as string);

// What presenced answers (docs/api.md): the built-in origin of HTTP sessions,
// and each session's device kind.
async function answers() {
  for (const o of await api.origins()) if (o.state === 'http') console.log(o.sessions);
  for (const s of await api.sessions('alice')) { const device: string | undefined = s.device; void device; }
}
void answers;

// A user's channels carry each membership's fields, typed (not unknown).
async function memberships() {
  for (const c of await api.userChannels('alice')) {
    const st: 'online' | 'idle' = c.status;
    const data: Record<string, unknown> | null = c.data;
    console.log(c.channel, st, data, c.since);
  }
}
void memberships;

// What setMessage answers is typed (it was unknown): the stored message and its expiry.
async function statusMessage() {
  const r = await api.setMessage('alice', { text: 'lunch', emoji: '🍔', expiresInS: 600 });
  const expires: number | null | undefined = r.message?.expires;
  console.log(r.user_id, r.message?.text, expires);
}
void statusMessage;

// Events as presenced sends them: user.availability's from/to are availabilities
// (typed as statuses, comparing to 'dnd' did not compile), channel events' fields typed.
async function events() {
  for await (const item of api.events({ types: ['user.availability', 'user.message', 'channel.*'] })) {
    if (item.gap) continue;
    const e = item.data;
    if (e.type === 'user.availability' && e.to === 'dnd') console.log(e.user_id, 'do not disturb');
    if (e.type === 'user.message') console.log(e.message?.text ?? null);
    if (e.type === 'channel.join') { const n: number | undefined = e.count; const ch: string | undefined = e.channel; console.log(ch, n, e.data); }
  }
}
void events;
