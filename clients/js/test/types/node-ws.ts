// SPDX-License-Identifier: MIT
// Type-checked (never run) under `tsc --strict` with node's types and the npm
// `ws` package: `ws`'s WebSocket class must be accepted as the client's WebSocket.
import WebSocket from 'ws';
import { PresenceClient, type StateEvent } from '../../presence.js';

const client = new PresenceClient({
  url: 'ws://127.0.0.1:7070/v1/ws',
  getToken: () => process.env.TOKEN ?? null,
  WebSocket,
  window: null,
  document: null,
  idle: false,
});
client.on('state', (s: StateEvent) => console.log(s.state, s.code));
client.connect();
