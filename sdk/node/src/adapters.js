// SPDX-License-Identifier: MIT
// One call to report the sessions of an existing WebSocket or Socket.IO
// server through a BackendConnection: each connection is opened as a session
// when it connects and closed when it disconnects. Neither `ws` nor
// `socket.io` is imported here: the adapters only use the server object given.

function identity(r) {
  if (!r) return null;
  if (typeof r === 'string') return { userId: r };
  return r.userId ? r : null;
}

/**
 * Report the connections of a `ws` WebSocketServer.
 * @param {import('./backend.js').BackendConnection} backend
 * @param {import('ws').WebSocketServer} wss
 * @param {(ws, req) => string | {userId, meta?, device?} | null} identify
 *        who the connection is (from your own auth: a cookie, a token); null: not reported
 * @returns {() => void} stops reporting new connections
 */
export function trackWebSocketServer(backend, wss, identify) {
  const onConnection = (ws, req) => {
    const who = identity(identify(ws, req));
    if (!who) return;
    const session = backend.open(who.userId, { meta: who.meta, device: who.device });
    ws.presenceSession = session;
    ws.once('close', () => backend.close(session));
  };
  wss.on('connection', onConnection);
  return () => wss.off('connection', onConnection);
}

/**
 * Report the sockets of a Socket.IO server (or namespace). A client may emit
 * `presence:status` with 'idle' or 'online' (the seed's setStatusIdle /
 * setStatusOnline); `socket.data.presenceSession` holds the session id, for
 * `backend.join(session, channel, data)` and the like.
 * @param {import('./backend.js').BackendConnection} backend
 * @param {import('socket.io').Server | import('socket.io').Namespace} io
 * @param {(socket) => string | {userId, meta?, device?} | null} identify
 */
export function trackSocketIO(backend, io, identify, { statusEvent = 'presence:status' } = {}) {
  const onConnection = (socket) => {
    const who = identity(identify(socket));
    if (!who) return;
    const session = backend.open(who.userId, { meta: who.meta, device: who.device });
    socket.data = socket.data || {};
    socket.data.presenceSession = session;
    if (statusEvent) {
      socket.on(statusEvent, (status) => {
        if (status === 'idle' || status === 'online') backend.setStatus(session, status);
      });
    }
    socket.once('disconnect', () => backend.close(session));
  };
  io.on('connection', onConnection);
  return () => io.off('connection', onConnection);
}
