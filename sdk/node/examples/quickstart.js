#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// A backend's first hour with presenced, in one program (run by the tests):
// mint a client token, see the client come online on the event stream, look
// the user and its sessions up, kick the session, see it go.
//   PRESENCED_URL=http://127.0.0.1:7070 PRESENCED_API_KEY=… PRESENCED_JWT_SECRET=… node examples/quickstart.js
import WebSocket from 'ws';
import { mintToken, PresenceAPI, PresenceError } from 'presenced-node';

const url = process.env.PRESENCED_URL || 'http://127.0.0.1:7070';
const api = new PresenceAPI({ url, apiKey: process.env.PRESENCED_API_KEY });

// 1. What your login endpoint hands the browser.
const token = mintToken({ secret: process.env.PRESENCED_JWT_SECRET, userId: 'alice', ttlSeconds: 600, meta: { device: 'web' } });

// 2. Follow the events (from now on); once the stream is open, the browser
//    (played here by `ws`) connects with that token.
let browser;
const events = api.events({
  onConnect: () => { browser ??= new WebSocket(`${url.replace(/^http/, 'ws')}/v1/ws?token=${token}`); },
});
for await (const e of events) {
  if (e.gap) continue;
  console.log(`event ${e.seq} ${e.type} ${e.data.user_id} (${e.data.reason})`);
  if (e.type === 'user.online') {
    const user = await api.getUser('alice');
    const [session] = await api.sessions('alice');
    console.log(`alice is ${user.status} with ${user.sessions} session(s), device ${session.meta.device}`);
    await api.kick(session.session_id);
  }
  if (e.type === 'user.offline') break;
}
try {
  await api.kick('gone');
} catch (err) {
  if (err instanceof PresenceError) console.log(`kick again: ${err.status} ${err.code}`);
}
browser.terminate();
