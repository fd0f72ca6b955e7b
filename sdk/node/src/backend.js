// SPDX-License-Identifier: MIT
// The backend session connection (docs/protocol.md section 5): one WebSocket
// at /v1/backend over which this process reports the sessions it holds
// (its users' Socket.IO / ws / DDP connections). Operations are batched (one
// frame per event-loop turn, at most max_ops each) and acknowledged by seq.
//
// The SDK keeps the list of live sessions (and their channels) itself, so a
// reconnect needs no replay of what was queued: after every welcome it
// re-asserts the whole list (`sync`, only net differences become events),
// then re-joins the channels. Operations made while disconnected change that
// list only; they reach presenced through the re-assert.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { holdApiKey } from './auth.js';
import { PresenceError } from './errors.js';

/**
 * Refused here, not only by presenced: the list keeps what was asked, and its
 * re-assert after the next reconnect would carry the refused status, which
 * presenced refuses again and so ends the session (as the Python SDK checks).
 */
function checkStatus(status) {
  if (status !== 'online' && status !== 'idle') {
    throw new TypeError(`BackendConnection: a session status is 'online' or 'idle', not ${JSON.stringify(status)}`);
  }
}

const HANDSHAKE_MS = 10000;
const CONNECTING = 0;
const OPEN = 1;

export class BackendConnection extends EventEmitter {
  /**
   * @param {object} o
   * @param {string} o.url      presenced's base URL (http(s)://host:port)
   * @param {string} o.apiKey
   * @param {string} o.origin   a stable name for this process (the same after a restart)
   * @param {typeof import('ws').WebSocket} [o.WebSocket]  default: the `ws` package
   * @param {number} [o.retryMs]  first reconnect delay (250), doubling to o.maxRetryMs (10000)
   * @param {number} [o.maxOps]   ops per frame at most (1000, and at most the server's max_ops):
   *   presenced spent 2.3 us of CPU per op in frames of 1000 and 4.4 us in frames of
   *   10,000 (bench/sdk_node_backend.js), and a smaller frame is acknowledged sooner
   */
  constructor({ url, apiKey, origin, WebSocket = null, retryMs = 250, maxRetryMs = 10000, maxOps = 1000 } = {}) {
    super();
    if (!url || !apiKey || !origin) throw new TypeError('BackendConnection: url, apiKey and origin are required');
    // Checked here, as PresenceAPI does: '127.0.0.1:7070' without its scheme
    // made ws throw a SyntaxError inside the reconnect loop, where no caller
    // could catch it, and the process died (an uncaught exception).
    let u;
    try { u = new URL(String(url)); } catch (_) { u = null; }
    if (!u || !['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) || !u.host) {
      throw new TypeError('BackendConnection: url must be an absolute http(s) URL, such as http://127.0.0.1:7070');
    }
    this.url = url.replace(/^http/, 'ws').replace(/\/+$/, '') + '/v1/backend?origin=' + encodeURIComponent(origin);
    holdApiKey(this, apiKey, 'BackendConnection');
    this.origin = origin;
    this._WS = WebSocket;
    // Checked here: maxOps 0 or NaN (Number() of an unset variable) split
    // frames of no op for ever, and a NaN delay reconnected every millisecond.
    for (const [name, v] of [['retryMs', retryMs], ['maxRetryMs', maxRetryMs], ['maxOps', maxOps]]) {
      if (typeof v !== 'number' || !(v >= 1) || v === Infinity) throw new TypeError(`BackendConnection: ${name} must be a number >= 1, not ${String(v)}`);
    }
    this.retryMs = retryMs;
    this.maxRetryMs = maxRetryMs;
    this.maxOps = Math.floor(maxOps);
    /** session id -> { user, status, meta, device, channels: Map<channel, data> } */
    this.sessions = new Map();
    this._leftWhileDown = new Map();   // session -> Set(channel) left while detached
    this._queue = [];                  // ops not yet sent
    this._inflight = new Map();        // seq -> { ops, resolve }
    this._waiters = [];                // flush() promises: { seq, resolve }
    this._seq = 0;
    this._scheduled = false;
    this._ws = null;
    this._ready = false;               // welcome received and the re-assert sent
    this._closed = false;
    this._takenOver = false;           // closed by 4009: another process holds the origin
    this._fatal = null;                // the refusal that stopped it, for a later connect()
    this._wake = null;                 // cuts the delay between two attempts short (end())
    this._connecting = new Set();      // reject() of connect() promises not yet settled
    this.connects = 0;
    this.welcome = null;
    this.stats = { opsSent: 0, opsAcked: 0, opErrors: 0 };
  }

  /** Connect (and keep reconnecting until close()). Resolves at the first welcome. */
  connect() {
    if (!this._loop) this._loop = this._run();
    return new Promise((resolve, reject) => {
      if (this._ready) return resolve(this.welcome);
      // After a refusal (401, 400, a takeover) nothing more will come: say why.
      // After end() (it said 'ended before it connected' of one that had
      // connected): final, as in the Go and Python SDKs.
      if (this._closed) {
        return reject(this._fatal || new Error(this.connects ? 'BackendConnection ended (end() was called): make a new one'
          : 'BackendConnection ended before it connected'));
      }
      const ok = (w) => { this.off('fatal', ko); this._connecting.delete(ko); resolve(w); };
      const ko = (e) => { this.off('ready', ok); this.off('fatal', ko); this._connecting.delete(ko); reject(e); };
      this._connecting.add(ko);
      this.once('ready', ok);
      this.once('fatal', ko);
    });
  }

  async _WebSocket() {
    if (this._WS) return this._WS;
    const mod = await import('ws');
    this._WS = mod.WebSocket || mod.default;
    return this._WS;
  }

  async _run() {
    const WS = await this._WebSocket();
    let delay = this.retryMs;
    while (!this._closed) {
      // handshakeTimeout: a host that accepts and never answers (stalled,
      // or a path that drops packets) would hold this attempt for ever.
      const ws = new WS(this.url, { headers: { Authorization: `Bearer ${this.apiKey}` }, perMessageDeflate: false, handshakeTimeout: HANDSHAKE_MS });
      this._ws = ws;
      const ended = new Promise((resolve) => {
        ws.on('open', () => { delay = this.retryMs; });
        ws.on('message', (m) => this._onMessage(m));
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c) => { body += c; });
          res.on('end', () => {
            let code = 'http_' + res.statusCode, message = `backend connection refused: HTTP ${res.statusCode}`;
            try { ({ code = code, message = message } = JSON.parse(body).error); } catch (_) { /* not JSON */ }
            // A PresenceError with the daemon's message, as the API's and the
            // Go SDK's (it was a plain Error with a code and no message).
            const err = new PresenceError(res.statusCode, code, message);
            // 409 bad_origin: a reserved origin name ('http', the origin of
            // PUT /v1/sessions), which was retried for ever.
            if (res.statusCode === 401 || res.statusCode === 400 || res.statusCode === 409) {
              this._closed = true;
              this._fatal = err;
              // Refused on a reconnect (the key rotated): told to 'error' too,
              // as origin_taken_over is, and as the Go SDK's OnError and the
              // Python SDK's on_error hear it; a first connect() rejects.
              if (this.connects > 0) this._error(err);
              this.emit('fatal', err);
            } else this._error(err);
            resolve();
          });
        });
        ws.on('error', (e) => this._error(e));
        ws.on('close', (code, reason) => { this._onClose(code, String(reason)); resolve(); });
      });
      await ended;
      if (this._closed) break;
      await new Promise((r) => { const timer = setTimeout(r, delay); this._wake = () => { clearTimeout(timer); r(); }; });
      this._wake = null;
      delay = Math.min(delay * 2, this.maxRetryMs);
    }
  }

  /**
   * Every failure here is retried or reported by the SDK itself, so 'error'
   * is for watching only: an EventEmitter throws an 'error' nobody listens to,
   * which from inside a socket handler would end the process.
   */
  _error(err) {
    if (this.listenerCount('error')) this.emit('error', err);
  }

  /**
   * A path that dies without FIN or RST (a NAT or load balancer that forgot
   * the connection, a frozen host) is noticed only by asking: ping every
   * heartbeat of the welcome and drop the connection when nothing came back
   * by the next one, so the reconnect and re-assert happen inside presenced's
   * resume window (as the Go SDK does).
   */
  _startPinger(ws, everyMs) {
    clearInterval(this._pinger);
    if (!ws || typeof ws.ping !== 'function' || !(everyMs > 0)) return;
    let answered = true;
    const heard = () => { answered = true; };
    ws.on('pong', heard);
    ws.on('message', heard);
    this._pinger = setInterval(() => {
      if (ws.readyState !== OPEN) return;
      if (!answered) {
        this._error(Object.assign(new Error(`presenced answered no ping for ${everyMs} ms: reconnecting`), { code: 'network' }));
        ws.terminate();
        return;
      }
      answered = false;
      ws.ping();
    }, everyMs);
  }

  _onClose(code, reason) {
    clearInterval(this._pinger);
    const wasReady = this._ready;
    this._ready = false;
    this._ws = null;
    // Ops in flight or queued are in this.sessions already: the next re-assert
    // carries them, all but a leave (a resumed origin keeps its memberships, and
    // the re-assert only joins): keep those to send again.
    const unsent = [...[...this._inflight.values()].flatMap((b) => b.ops), ...this._queue];
    for (const op of unsent) {
      if (op.op !== 'leave' || !this.sessions.has(op.session)) continue;
      if (!this._leftWhileDown.has(op.session)) this._leftWhileDown.set(op.session, new Set());
      this._leftWhileDown.get(op.session).add(op.channel);
    }
    for (const [, b] of this._inflight) b.resolve({ lost: true });
    this._inflight.clear();
    this._queue = [];
    for (const w of this._waiters.splice(0)) w.resolve();
    if (wasReady) this.emit('disconnect', { code, reason });
    if (code === 4009) {
      // Only another process can take over a live connection of ours (a
      // reconnect of our own replaces a dead one): the same origin twice.
      // Taking it back would start a loop in which each sync ends the other's
      // sessions, so the newer connection keeps it and this one stops.
      // A PresenceError (not retryable), as the Go and Python SDKs give it,
      // told to 'error' once: the error frame before this close told nothing.
      const err = new PresenceError(0, 'origin_taken_over',
        `origin ${this.origin} taken over by another connection (is another process using this origin?): stopped`);
      this._closed = true;
      this._fatal = err;
      this._takenOver = true;
      this._error(err);
      this.emit('fatal', err);
    }
  }

  _onMessage(raw) {
    let msg;
    try { msg = JSON.parse(raw.toString()); } catch (_) { return; }
    switch (msg.type) {
      case 'welcome':
        this.welcome = msg;
        this._startPinger(this._ws, msg.heartbeat_ms);
        this.connects++;
        if (msg.max_ops) this.maxOps = Math.min(this.maxOps, msg.max_ops);
        this._reassert();
        this._ready = true;
        this.emit('ready', msg);
        this._schedule();
        break;
      case 'ack': this._onAck(msg); break;
      case 'ended': {
        const s = this.sessions.get(msg.session);
        this.sessions.delete(msg.session);
        this.emit('ended', { session: msg.session, user: s ? s.user : null, reason: msg.reason });
        break;
      }
      case 'left': {
        // A removal by presenced's API (DELETE /v1/channels/{name}/members/{user}):
        // out of the list, or the next re-assert would join the channel again.
        // presenced sends those of a detached origin before the welcome, so
        // the re-assert that the welcome starts no longer carries them.
        const s = this.sessions.get(msg.session);
        if (!s || !s.channels.delete(msg.channel)) break;
        const left = this._leftWhileDown.get(msg.session);
        if (left) left.delete(msg.channel);
        // A join the store refused after its ack (reason 'refused') says why:
        // its code and message, which the app needs to tell a channel limit
        // (too_many_channels) from a session the store lost (no_session).
        const e = { session: msg.session, user: s.user, channel: msg.channel, reason: msg.reason };
        if (msg.code !== undefined) { e.code = msg.code; e.message = msg.message; }
        this.emit('left', e);
        break;
      }
      case 'error':
        // origin_taken_over: the close 4009 that follows reports it (once,
        // with what this connection does now), as the Go and Python SDKs do.
        if (msg.code === 'origin_taken_over') break;
        // A PresenceError (status 0) with the frame's code, and its seq and
        // retry_ms, as the Go SDK's *Error and the Python SDK's PresenceError:
        // it was a plain Error, with no retryable to tell it by.
        this._error(Object.assign(new PresenceError(0, msg.code, `backend frame refused: ${msg.message}`),
          msg.seq !== undefined ? { seq: msg.seq } : {}, msg.retry_ms !== undefined ? { retry_ms: msg.retry_ms } : {}));
        if (msg.code === 'rate_limited' && msg.seq !== undefined) this._retryBatch(msg.seq, msg.retry_ms || 100);
        else if (msg.seq !== undefined) this._onAck({ seq: msg.seq, applied: 0, frameError: msg.code });
        break;
      case 'pong': break;
      default: break;
    }
  }

  _retryBatch(seq, ms) {
    const b = this._inflight.get(seq);
    if (!b) return;
    setTimeout(() => {
      if (!this._ws || this._ws.readyState !== OPEN || !this._inflight.has(seq)) return;
      this._ws.send(b.frame);
    }, ms);
  }

  _onAck(msg) {
    const b = this._inflight.get(msg.seq);
    if (!b) return;
    this._inflight.delete(msg.seq);
    this.stats.opsAcked += b.ops.length;
    if (msg.errors) {
      for (const e of msg.errors) {
        const op = b.ops[e.index];
        // A leave sent again after a reconnect may find the channel left already.
        if (op && op.op === 'leave' && e.code === 'not_joined') continue;
        this.stats.opErrors++;
        this._undo(op, e.code);
        this.emit('rejected', { op, code: e.code, message: e.message });
      }
    }
    b.resolve(msg);
    while (this._waiters.length && this._waiters[0].seq <= msg.seq) this._waiters.shift().resolve();
  }

  /** A refused op: make the local list say what presenced holds. */
  _undo(op, code) {
    if (!op || !op.session) return;
    if (op.op === 'open' && (code !== 'internal')) {
      const s = this.sessions.get(op.session);
      if (s && s.user === op.user) this.sessions.delete(op.session);
    } else if (op.op === 'join') {
      const s = this.sessions.get(op.session);
      if (s) s.channels.delete(op.channel);
    } else if (code === 'no_session' || code === 'session_owned') {
      this.sessions.delete(op.session);
    }
  }

  /** After a welcome: the whole list (sync frames), then every channel membership. */
  _reassert() {
    const items = [];
    for (const [session, s] of this.sessions) {
      const it = { session, user: s.user, status: s.status };
      if (s.meta) it.meta = s.meta;
      if (s.device) it.device = s.device;
      items.push(it);
    }
    const frames = [];
    for (let i = 0; i < items.length || i === 0; i += this.maxOps) {
      const chunk = items.slice(i, i + this.maxOps);
      frames.push({ type: 'sync', seq: ++this._seq, sessions: chunk, done: i + this.maxOps >= items.length });
    }
    for (const f of frames) this._sendFrame(f, f.sessions.map((x) => ({ op: 'sync', ...x })));
    const ops = [];
    for (const [session, set] of this._leftWhileDown) {
      if (this.sessions.has(session)) for (const channel of set) ops.push({ op: 'leave', session, channel });
    }
    this._leftWhileDown.clear();
    for (const [session, s] of this.sessions) {
      for (const [channel, data] of s.channels) ops.push({ op: 'join', session, channel, data });
    }
    // ahead of anything queued meanwhile
    this._queue.unshift(...ops);
  }

  _sendFrame(frame, ops) {
    const text = JSON.stringify(frame);
    const p = new Promise((resolve) => this._inflight.set(frame.seq, { ops, resolve, frame: text }));
    this._ws.send(text);
    this.stats.opsSent += ops.length;
    return p;
  }

  _schedule() {
    if (this._scheduled || !this._ready) return;
    this._scheduled = true;
    setImmediate(() => { this._scheduled = false; this._flushQueue(); });
  }

  _flushQueue() {
    if (!this._ready || !this._ws || this._ws.readyState !== OPEN) return;
    while (this._queue.length) {
      const ops = this._queue.splice(0, this.maxOps);
      this._sendFrame({ type: 'batch', seq: ++this._seq, ops }, ops);
    }
  }

  _push(op) {
    // After a takeover the app's handlers (trackSocketIO) still call in: they
    // change the list only, as while disconnected, rather than throw.
    if (this._closed && !this._takenOver) throw new Error('BackendConnection is closed');
    if (this._ready) {
      this._queue.push(op);
      this._schedule();
    }
  }

  /**
   * Every operation so far acknowledged (or the connection lost: then the next
   * re-assert carries them). Resolves at once when nothing is pending.
   */
  flush() {
    if (!this._ready) return Promise.resolve();
    this._flushQueue();
    if (!this._inflight.size) return Promise.resolve();
    return new Promise((resolve) => this._waiters.push({ seq: this._seq, resolve }));
  }

  // ---- operations ----------------------------------------------------------

  /** A new session of this origin; returns its id (a random one unless given). */
  open(userId, { session = randomUUID(), status = 'online', meta, device } = {}) {
    checkStatus(status);
    this.sessions.set(session, { user: userId, status, meta: meta || null, device: device || null, channels: new Map() });
    const op = { op: 'open', session, user: userId };
    if (status !== 'online') op.status = status;
    if (meta) op.meta = meta;
    if (device) op.device = device;
    this._push(op);
    return session;
  }

  /** online / idle (the seed's setStatusOnline / setStatusIdle). */
  setStatus(session, status) {
    checkStatus(status);
    const s = this.sessions.get(session);
    if (!s) return false;
    if (s.status === status) return true;
    s.status = status;
    this._push({ op: 'status', session, status });
    return true;
  }

  close(session) {
    const s = this.sessions.get(session);
    if (!s) return false;
    this.sessions.delete(session);
    this._leftWhileDown.delete(session);
    this._push({ op: 'close', session });
    return true;
  }

  join(session, channel, data = null) {
    const s = this.sessions.get(session);
    if (!s) return false;
    s.channels.set(channel, data);
    this._push({ op: 'join', session, channel, data });
    return true;
  }

  update(session, channel, data) {
    const s = this.sessions.get(session);
    if (!s || !s.channels.has(channel)) return false;
    s.channels.set(channel, data);
    this._push({ op: 'update', session, channel, data });
    return true;
  }

  leave(session, channel) {
    const s = this.sessions.get(session);
    if (!s || !s.channels.delete(channel)) return false;
    if (this._ready) this._push({ op: 'leave', session, channel });
    else {
      if (!this._leftWhileDown.has(session)) this._leftWhileDown.set(session, new Set());
      this._leftWhileDown.get(session).add(channel);
    }
    return true;
  }

  /**
   * Stop. `bye: true` ends every session of this origin at once (a backend
   * that will not come back); otherwise presenced keeps them for its resume
   * window, for a restarted process with the same origin to take back.
   */
  async end({ bye = false } = {}) {
    this._closed = true;
    const ws = this._ws;
    // An attempt still opening (a presenced that does not answer) would
    // otherwise complete later and stay open, with end() waiting on it.
    if (ws && ws.readyState === CONNECTING) ws.terminate();
    if (this._wake) this._wake();
    for (const ko of [...this._connecting]) ko(new Error('BackendConnection ended before it connected'));
    if (ws && ws.readyState === OPEN) {
      await this.flush();
      if (bye) ws.send(JSON.stringify({ type: 'bye' }));
      else ws.close(1000);
      await new Promise((r) => (ws.readyState === 3 ? r() : ws.once('close', r)));
    }
    await this._loop;
  }

  /** Drop the connection now (tests, failover): it reconnects and re-asserts. */
  reconnect() { if (this._ws) this._ws.terminate(); }
}
