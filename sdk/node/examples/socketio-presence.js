#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// An existing Socket.IO app that adds presence with one call (docs/guides/socketio.md;
// run by the tests). Each socket of a logged-in user becomes a presenced session;
// the browser emits 'presence:status' ('idle' / 'online'); the app answers
// 'who' with the live status of the users asked about, and joins a room.
//   PRESENCED_URL=… PRESENCED_API_KEY=… PORT=3000 node examples/socketio-presence.js
import http from 'node:http';
import { Server } from 'socket.io';
import { BackendConnection, PresenceAPI, trackSocketIO } from 'presenced-node';

const url = process.env.PRESENCED_URL || 'http://127.0.0.1:7070';
const apiKey = process.env.PRESENCED_API_KEY;
const server = http.createServer();
const io = new Server(server);

// Your app's own auth decides who a socket is; here a name in the handshake.
io.use((socket, next) => (socket.handshake.auth.user ? next() : next(new Error('not logged in'))));

// Presence: one backend connection per process, with a stable origin name.
const presence = new BackendConnection({ url, apiKey, origin: `chat-${process.env.PORT || 3000}` });
trackSocketIO(presence, io, (socket) => socket.handshake.auth.user);
const api = new PresenceAPI({ url, apiKey });

io.on('connection', (socket) => {
  socket.on('who', async (users, reply) => reply(await api.getUsers(users)));
  socket.on('enter', (room, data) => presence.join(socket.data.presenceSession, room, data));
});

await presence.connect();
server.listen(Number(process.env.PORT || 3000), '127.0.0.1', () => console.log(`listening on ${server.address().port}`));
process.on('SIGTERM', async () => { io.close(); await presence.end({ bye: true }); process.exit(0); });
