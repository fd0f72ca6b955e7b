// SPDX-License-Identifier: MIT
// presence.js: browser (and Node) client for presenced, protocol v1.
// Dependency-free ES module. See README.md next to this file and
// docs/protocol.md for the wire contract.
//
// web/presence.js is a byte-for-byte copy of clients/js/presence.js (a unit
// test fails when they differ): edit clients/js/presence.js, then copy.

export const PROTOCOL_VERSION = 1;

/** Connection states, in the order a connection normally goes through them. */
export const CONNECTING = 'connecting';
export const OPEN = 'open';
export const RECONNECTING = 'reconnecting';
export const CLOSED = 'closed';

/** Close codes after which the client does not reconnect by itself. */
const FATAL_CLOSE = new Map([
  [4003, 'kicked'],
  [4031, 'too_many_sessions'],
]);

/** Refusals of a channel join that the client retries (see Channel._refused). */
const RETRY_JOIN = new Set(['join_rate', 'store_unavailable']);

/** Longest delay setTimeout honours (2^31-1 ms); a longer one fires at once. */
const MAX_TIMER_MS = 2147483647;

const ACTIVITY_EVENTS = ['keydown', 'pointerdown', 'pointermove', 'touchstart', 'scroll', 'wheel'];

const DEFAULTS = {
  reconnect: {
    initialDelayMs: 500, // first retry around this long after a drop
    maxDelayMs: 30000, // cap of the exponential backoff
    factor: 2,
    jitter: 0.5, // fraction of each delay that is randomized (0..1)
    stableAfterMs: 10000, // a connection open this long resets the backoff
  },
  idle: {
    timeoutMs: 60000, // no activity this long: idle (0 turns detection off)
    whenHidden: false, // also idle as soon as the page is hidden
    throttleMs: 1000, // activity events handled at most this often
  },
  pingIntervalMs: 25000, // app-level ping after this much silence (0: never)
  pongTimeoutMs: 10000, // no answer this long after a ping: reconnect
  connectTimeoutMs: 10000, // no welcome this long after opening a socket: retry (0: wait)
  // Refresh the token on the live connection this long before it expires
  // (at most half its remaining life); 0 turns refresh in place off.
  tokenRefreshAheadMs: 60000,
  maxMessageBytes: 32768, // subscribe lists are split to stay under this
};

function merge(defaults, given) {
  const out = { ...defaults };
  if (given) for (const k of Object.keys(given)) if (given[k] !== undefined) out[k] = given[k];
  return out;
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) return null;
  return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/v1/ws';
}

/** Backoff delay for attempt n (0-based): exponential, capped, jittered. */
export function backoffDelay(attempt, opts, random = Math.random) {
  const o = merge(DEFAULTS.reconnect, opts);
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * Math.pow(o.factor, attempt));
  const j = Math.min(1, Math.max(0, o.jitter));
  return Math.round(base * (1 - j) + base * j * random());
}

/**
 * A presenced client: one WebSocket session, kept alive across drops.
 *
 *   const presence = new PresenceClient({ getToken: async () => fetchToken() });
 *   presence.on('state', (s) => console.log(s.state));
 *   presence.subscribe(['bob', 'carol'], (user) => render(user));
 *   presence.connect();
 */
/** Availabilities a user may set (docs/protocol.md section 6). */
export const AVAILABILITIES = Object.freeze(['auto', 'dnd', 'away', 'invisible']);

function codeError(code, message) {
  const e = new Error(message);
  e.code = code;
  return e;
}

// A watched user's state from a snapshot entry (docs/protocol.md 6.4).
function userState(u) {
  return {
    user_id: u.user_id, status: u.status, since: u.since ?? 0, last_seen: u.last_seen ?? 0,
    version: u.version ?? 0, availability: u.availability ?? 'auto', last_active: u.last_active ?? 0,
    message: u.message ?? null, devices: { ...(u.devices || {}) },
  };
}

// A change entry applied onto what we knew: status and availability always,
// the whole device map when given (an availability change masks every
// device: under dnd an idle one shows online), the named device, the
// message when it is what changed.
function mergeChange(prev, u, kind) {
  const s = copyState(prev);
  if (u.status !== undefined) s.status = u.status;
  if (u.availability !== undefined) s.availability = u.availability;
  if (typeof u.version === 'number') s.version = u.version;
  if (kind === 'status') {
    if (u.since !== undefined) s.since = u.since;
    if (u.last_seen !== undefined) s.last_seen = u.last_seen;
  }
  if (kind === 'message') s.message = u.message ?? null;
  if (u.devices && typeof u.devices === 'object') s.devices = { ...u.devices };
  if (typeof u.device === 'string') {
    if (u.device_status && u.device_status !== 'offline') s.devices[u.device] = u.device_status;
    else delete s.devices[u.device];
  }
  if (s.status === 'offline') s.devices = {};
  return s;
}

function ignore() { /* see _detach */ }

// A user id presenced accepts (docs/protocol.md: 1..128 bytes of UTF-8
// without control characters, C1 included; no lone surrogate).
function validId(s) {
  const n = utf8Length(s);
  return n >= 1 && n <= 128 && !/[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?:^|[^\ud800-\udbff])[\udc00-\udfff]/.test(s);
}

// Bytes of s in UTF-8 (JSON.stringify leaves no lone surrogate).
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) { n += 4; i++; } // a surrogate pair
    else n += 3;
  }
  return n;
}

function copyState(s) {
  return { ...s, devices: { ...(s.devices || {}) }, message: s.message ? { ...s.message } : null };
}

export class PresenceClient {
  constructor(options = {}) {
    if (typeof options.getToken !== 'function') throw new TypeError('options.getToken must be a function');
    this._getToken = options.getToken;
    this._url = options.url || defaultUrl();
    if (!this._url) throw new TypeError('options.url is required outside a browser page');
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') throw new TypeError('no WebSocket implementation: pass options.WebSocket');
    this._reconnect = merge(DEFAULTS.reconnect, options.reconnect);
    this._idleOpts = options.idle === false ? { ...DEFAULTS.idle, timeoutMs: 0 } : merge(DEFAULTS.idle, options.idle);
    this._pingIntervalMs = options.pingIntervalMs ?? DEFAULTS.pingIntervalMs;
    this._pongTimeoutMs = options.pongTimeoutMs ?? DEFAULTS.pongTimeoutMs;
    this._connectTimeoutMs = options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    this._refreshAheadMs = options.tokenRefreshAheadMs ?? DEFAULTS.tokenRefreshAheadMs;
    this._maxMessageBytes = options.maxMessageBytes ?? DEFAULTS.maxMessageBytes;
    const t = options.timers || {};
    const setT = t.setTimeout || ((f, ms) => globalThis.setTimeout(f, ms));
    // Browsers and node run a timer of more than 2^31-1 ms (24.8 days) at
    // once: a token valid for a month was refreshed in a loop. Longer waits
    // are cut to that; the refresh and idle timers then check whether they
    // are due and wait again.
    this._setTimeout = (f, ms) => setT(f, Math.min(ms, MAX_TIMER_MS));
    this._clearTimeout = t.clearTimeout || ((h) => globalThis.clearTimeout(h));
    this._now = t.now || (() => Date.now());
    this._random = options.random || Math.random;
    // Idle detection listens here; null (the default outside a browser) disables it.
    this._window = options.window !== undefined ? options.window : (globalThis.window ?? null);
    this._document = options.document !== undefined ? options.document : (globalThis.document ?? null);

    this._listeners = new Map(); // event name -> Set of functions
    this._state = CLOSED;
    this._ws = null;
    this._wanted = false; // connect() called and close() not since
    this._attempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._connectTimer = null;
    this._refreshTimer = null;
    this._refreshId = null; // id of the token message awaiting its answer
    // The server's clock less ours, ms, from a pong's ts: exp is on the
    // server's clock (see _armRefresh).
    this._clockOffset = 0;
    this._clockPing = null; // { id, sent } of the ping that measures it
    this._idleTimer = null;
    this._openedAt = 0;
    this._lastSent = 0;
    this._lastRecv = 0;
    this._nextId = 1;
    this._session = null; // the welcome message of the current session
    this._pending = new Map(); // request id -> {resolve, reject} (setAvailability, setMessage)
    this._watch = new Map(); // user id -> Set of onChange callbacks
    this._channels = new Map(); // channel name -> Channel (joined or observed)
    this._chanReqs = new Map(); // request id -> Channel awaiting its answer
    this._subReqs = new Map(); // subscribe request id -> its users, until the snapshot
    this._subQueue = []; // user lists to subscribe again, paced (see _subRefused)
    this._subTimer = null;
    this._known = new Map(); // user id -> last known state
    this._manualIdle = false;
    this._autoIdle = false;
    this._availability = null; // the user's own setting, once known (see _ownAvailability)
    this._sentStatus = 'online'; // what the server believes about this session
    this._lastActivity = this._now();
    this._lastActivityHandled = 0;
    this._lastEmittedStatus = 'online';
    this._domBound = false;
    this._idleWatched = false; // activity listeners bound: idle by timeout can be undone
    this._onActivity = () => this._activity();
    this._onVisibility = () => this._visibility();
    // The network came back: skip the backoff wait; or, with a connection
    // open, check it at once (it may have been cut on the way, or opened on
    // an interface that is gone).
    this._onOnline = () => {
      if (this._reconnectTimer !== null) { this._clearTimeout(this._reconnectTimer); this._reconnectTimer = null; this._open(); } else this._probe();
    };
    // The browser says the network is gone, but an open WebSocket is not
    // closed by it: the page showed 'open' until the next ping found it dead
    // (pingIntervalMs + pongTimeoutMs, 35 s). A ping now finds it within
    // pongTimeoutMs, and a network back in time answers it: nothing drops.
    this._onOffline = () => this._probe();
  }

  // ---------------------------------------------------------------- events

  /** Listen to 'state', 'connecting', 'open', 'reconnecting', 'closed', 'error',
   *  'presence', 'status', 'welcome', 'token', 'availability'. Returns a function that removes the listener. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  _emit(event, detail) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(detail); } catch (e) { this._report(e); }
    }
  }

  _report(e) {
    // A listener threw: do not break the client; surface it asynchronously.
    this._setTimeout(() => { throw e; }, 0);
  }

  _setState(state, detail = {}) {
    this._state = state;
    const d = { state, ...detail };
    this._emit(state, d);
    this._emit('state', d);
  }

  // ------------------------------------------------------------ accessors

  /** 'connecting' | 'open' | 'reconnecting' | 'closed' */
  get state() { return this._state; }
  /** The session id of the current connection (null when not open). */
  get sessionId() { return this._session ? this._session.session_id : null; }
  /** The user id of the token of the current connection (null before the first welcome). */
  get userId() { return this._session ? this._session.user_id : this._lastUserId ?? null; }
  /** This session's own status as the client wants it: 'online' | 'idle'. */
  get status() { return this._manualIdle || this._autoIdle ? 'idle' : 'online'; }
  /** Whether the current idle status comes from idle detection (not setStatusIdle). */
  get autoIdle() { return this._autoIdle && !this._manualIdle; }

  /** Last known state of a watched user, or undefined. */
  get(userId) {
    const u = this._known.get(userId);
    return u ? copyState(u) : undefined;
  }

  /** Every watched user whose state is known, as an array. */
  all() { return [...this._known.values()].map(copyState); }

  /** The user ids currently watched. */
  watched() { return [...this._watch.keys()]; }

  // ------------------------------------------------------------ lifecycle

  /** Open the connection (and keep it open until close()). */
  connect() {
    if (this._wanted) return;
    this._wanted = true;
    this._attempt = 0;
    this._bindDom();
    this._open();
  }

  /** Close the connection for good (until connect() again). */
  close(code = 1000, reason = '') {
    this._wanted = false;
    this._stopTimers();
    this._unbindDom();
    const ws = this._ws;
    this._ws = null;
    this._session = null;
    if (ws) {
      this._detach(ws);
      try {
        ws.close(code, reason);
      } catch (_) {
        // Browsers throw for a code other than 1000 or 3000-4999 (1001
        // included) and a reason over 123 bytes, and leave the socket open:
        // the session would stay online. Close it plainly then.
        try { ws.close(); } catch (_e) { /* already closing */ }
      }
    }
    if (this._state !== CLOSED) this._setState(CLOSED, { code, reason, wasClean: true, willReconnect: false, byClient: true });
  }

  async _open() {
    this._reconnectTimer = null;
    if (!this._wanted || this._ws) return;
    this._setState(CONNECTING, { attempt: this._attempt });
    const gen = (this._gen = (this._gen || 0) + 1);
    let token;
    try {
      token = await this._getToken();
    } catch (error) {
      if (gen !== this._gen || !this._wanted) return;
      this._emit('error', { kind: 'token', message: 'token provider failed', error });
      this._scheduleReconnect();
      return;
    }
    if (gen !== this._gen || !this._wanted) return;
    if (token == null || token === '') {
      // The provider has no token to give: stop, do not hammer the server.
      this._emit('error', { kind: 'token', message: 'no token' });
      this._wanted = false;
      this._unbindDom();
      this._setState(CLOSED, { code: 0, reason: 'no token', willReconnect: false });
      return;
    }
    // url may be a function, asked before every attempt as getToken is: a
    // page that knows several instances (and no load balancer in front)
    // names the next one after a drop, so that it reconnects to an instance
    // that is up rather than waiting for the dead one to come back.
    let base = this._url;
    let ws;
    try {
      if (typeof base === 'function') {
        base = await base({ attempt: this._attempt });
        if (gen !== this._gen || !this._wanted) return;
        if (typeof base !== 'string' || !base) throw new TypeError('options.url() gave no URL');
      }
      // A tab that is idle (detected or set) opens its session idle
      // (protocol.md 1): watchers of a user whose only tab it is see no
      // online in between. The status is still sent after the welcome,
      // which changes nothing on a server that took status=idle and sets
      // it on an older one that ignores the parameter.
      const url = base + (base.includes('?') ? '&' : '?') + (this.status === 'idle' ? 'status=idle&' : '') +
        'token=' + encodeURIComponent(token);
      ws = new this._WebSocket(url);
    } catch (error) {
      this._emit('error', { kind: 'socket', message: String(error && error.message || error), error });
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._openedAt = 0;
    this._sockOpened = false;
    this._sockError = null;
    this._sockUrl = base;
    ws.onopen = () => { this._sockOpened = true; this._lastRecv = this._now(); };
    ws.onmessage = (ev) => {
      // A frame the client cannot apply is reported, never thrown: under
      // node's `ws` an exception here ends the process.
      try { this._message(ws, ev.data); } catch (error) {
        this._emit('error', { kind: 'protocol', message: 'unexpected message from server', error });
      }
    };
    // A close event always follows; node's ws names the cause here
    // ("Unexpected server response: 403"), browsers say nothing.
    ws.onerror = (ev) => { this._sockError = (ev && (ev.message || (ev.error && ev.error.message))) || null; };
    ws.onclose = (ev) => this._closed(ws, ev);
    // A server that accepted the connection but never answers (a frozen
    // process, a proxy with no upstream) would hold the client in
    // 'connecting' for good: node's ws has no handshake timeout, and pings
    // only start after the welcome.
    if (this._connectTimeoutMs > 0) {
      this._connectTimer = this._setTimeout(() => {
        this._connectTimer = null;
        if (ws !== this._ws || this._session) return;
        this._emit('error', { kind: 'timeout', message: 'no welcome from server' });
        this._drop(ws, 'connect timeout');
      }, this._connectTimeoutMs);
    }
  }

  // Give up on a connection that does not answer: close it and reconnect.
  _drop(ws, reason) {
    this._detach(ws);
    // A peer that does not answer will not answer a close frame either:
    // node's ws would wait 30 s for it, holding the socket (and the process).
    // Browsers have no terminate() and do not hold the page.
    try {
      if (typeof ws.terminate === 'function') ws.terminate(); else ws.close(4000, reason);
    } catch (_) { /* ignore */ }
    this._closed(ws, { code: 4000, reason, wasClean: false });
  }

  _detach(ws) {
    this._failPending();
    this._subReqs.clear();
    // No answer to a channel request comes once its socket is gone: every
    // channel is joined again on the next welcome.
    this._chanReqs.clear();
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Not null: a socket closed while still connecting still reports an
    // error, and node's `ws` throws an 'error' nobody listens to (an
    // uncaught exception that ends the process).
    ws.onerror = ignore;
  }

  _closed(ws, ev) {
    if (ws !== this._ws) return;
    this._detach(ws);
    this._ws = null;
    this._session = null;
    this._stopTimers();
    const code = ev && typeof ev.code === 'number' ? ev.code : 1006;
    const reason = (ev && ev.reason) || this._closeError || '';
    this._closeError = null;
    const fatal = FATAL_CLOSE.get(code);
    if (this._openedAt && this._now() - this._openedAt >= this._reconnect.stableAfterMs) this._attempt = 0;
    const willReconnect = this._wanted && !fatal;
    // Stopped before 'closed' is told: a listener that decides to connect()
    // again (README) must find the client stopped, or its call is a no-op.
    if (fatal) {
      this._wanted = false;
      this._unbindDom();
    }
    this._setState(CLOSED, { code, reason, wasClean: !!(ev && ev.wasClean), willReconnect, fatal: fatal || null });
    // A socket that never opened: no server there, or presenced refused the
    // upgrade with an HTTP status a browser does not show (401 for the token,
    // 403 for the page's Origin). Without a word the page only retried, a
    // 1006 after another; this says where to look. (4000: our own timeout,
    // reported as such.)
    if (!this._sockOpened && code !== 4000) {
      this._emit('error', {
        kind: 'socket', code,
        message: 'could not connect to ' + this._sockUrl + ': ' + (this._sockError || 'closed before the WebSocket opened')
          + ' (no server there, or presenced refused the upgrade: 401 for a bad or expired token, 403 for an Origin'
          + ' not in its --allowed-origins; its log says which)',
      });
    }
    if (fatal) {
      this._emit('error', { kind: 'close', code, message: fatal });
      return;
    }
    if (!willReconnect) return;
    // 4001: the token expired while connected; _open() fetches a new one (it
    // always does), so retry promptly instead of backing off.
    if (code === 4001) this._attempt = 0;
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (!this._wanted || this._reconnectTimer !== null) return;
    const delayMs = backoffDelay(this._attempt, this._reconnect, this._random);
    this._attempt++;
    this._setState(RECONNECTING, { delayMs, attempt: this._attempt });
    this._reconnectTimer = this._setTimeout(() => this._open(), delayMs);
  }

  /** Try to reconnect now instead of waiting for the backoff. */
  reconnectNow() {
    if (this._reconnectTimer === null) return;
    this._clearTimeout(this._reconnectTimer);
    this._open();
  }

  _stopTimers() {
    this._refreshId = null;
    this._clockPing = null;
    this._subQueue = []; // every watched user is subscribed again on the next welcome
    for (const k of ['_reconnectTimer', '_pingTimer', '_pongTimer', '_refreshTimer', '_connectTimer', '_subTimer']) {
      if (this[k] !== null) { this._clearTimeout(this[k]); this[k] = null; }
    }
    // Joins waiting to be retried: every channel is joined again on the next welcome.
    for (const ch of this._channels.values()) ch._stopRetry();
  }

  // ------------------------------------------------------------- messages

  _send(obj) {
    const ws = this._ws;
    if (!ws || !this._session) return false;
    try {
      ws.send(JSON.stringify(obj));
    } catch (error) {
      this._emit('error', { kind: 'socket', message: 'send failed', error });
      return false;
    }
    this._lastSent = this._now();
    this._armPing();
    return true;
  }

  _message(ws, data) {
    if (ws !== this._ws) return;
    this._lastRecv = this._now();
    if (this._pongTimer !== null) { this._clearTimeout(this._pongTimer); this._pongTimer = null; }
    let m;
    try {
      m = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch (error) {
      this._emit('error', { kind: 'protocol', message: 'unparsable message from server', error });
      return;
    }
    if (!m || typeof m !== 'object') return;
    switch (m.type) {
      case 'welcome': return this._welcome(m);
      case 'presence': return this._presence(m);
      case 'channel':
      case 'left': {
        const ch = this._channels.get(m.channel);
        if (m.id !== undefined && this._chanReqs.has(m.id)) {
          // The answer to a join or observe: forgotten here, whether or not
          // its channel is still there (left before it came, the entry stayed
          // for good). One that answers a channel object since left is not
          // its successor's: the successor's own snapshot follows.
          const asker = this._chanReqs.get(m.id);
          this._chanReqs.delete(m.id);
          if (asker !== ch) return;
        }
        if (ch) ch._server(m);
        return;
      }
      case 'error':
        if (m.id !== undefined && this._chanReqs.has(m.id)) {
          const ch = this._chanReqs.get(m.id);
          this._chanReqs.delete(m.id);
          ch._refused(m);
          return;
        }
        if (m.code === 'not_allowed' && this._subReqs.has(m.id)) return this._subRefused(m);
        this._subReqs.delete(m.id);
        if (m.code === 'kicked' || m.code === 'too_many_sessions' || m.code === 'token_expired' || m.code === 'rate_limited') this._closeError = m.code;
        if (this._refreshId !== null && m.id === this._refreshId) return this._refreshRefused(m);
        // The answer to a request that returned a promise (setAvailability,
        // setMessage) rejects it, and only that: emitted as well, a page
        // that shows both its .catch() and its 'error' listener showed one
        // refusal twice (the demo did).
        if (this._settle(m.id, m)) return;
        this._emit('error', { kind: 'server', code: m.code, message: m.message, id: m.id });
        return;
      case 'ack':
        if (m.id !== undefined && this._chanReqs.has(m.id)) {
          // A channel's: an update, or a join asked without a snapshot.
          this._chanReqs.delete(m.id);
          return;
        }
        if (this._refreshId !== null && m.id === this._refreshId) return this._refreshed(m);
        this._settle(m.id, null);
        return;
      case 'pong':
        if (this._clockPing && m.id === this._clockPing.id) this._clockPong(m);
        return;
      default:
        return; // unknown types are ignored (forward compatibility)
    }
  }

  _welcome(m) {
    if (this._connectTimer !== null) { this._clearTimeout(this._connectTimer); this._connectTimer = null; }
    // Another user than before (a logout and a login in the same page):
    // what we knew of our own availability was the other user's.
    if (this._lastUserId !== undefined && this._lastUserId !== m.user_id) this._ownAvailability(null);
    this._session = m;
    this._lastUserId = m.user_id;
    this._openedAt = this._now();
    this._everOpened = true;
    // Online unless the URL said idle, which an older server ignores: so
    // an idle status is sent again (no event where it is already idle).
    this._sentStatus = 'online';
    this._setState(OPEN, { sessionId: m.session_id, userId: m.user_id, heartbeatMs: m.heartbeat_ms, timeoutMs: m.timeout_ms });
    this._emit('welcome', m);
    this._armRefresh(m.exp);
    // How far our clock is from the server's, for the refresh: one ping,
    // whose pong carries the server's time.
    if (this._refreshAheadMs && typeof m.exp === 'number') {
      const id = 'c' + this._nextId++;
      const sent = this._now();
      if (this._send({ type: 'ping', id })) this._clockPing = { id, sent };
    }
    // Restore this session's status, then the subscriptions.
    this._syncStatus();
    this._sendSubscribe([...this._watch.keys()]);
    // Channels joined or observed before: joined again on the new session
    // (a snapshot follows each).
    for (const ch of this._channels.values()) ch._send();
    this._armPing();
  }

  _presence(m) {
    if (m.snapshot && m.id !== undefined) this._subReqs.delete(m.id);
    // presenced answers a subscribe per user: the users the token's watch
    // does not allow are named in the snapshot's not_allowed (an older
    // server refuses the whole list instead: _subRefused). Reported as a
    // refused half is, once; they stay in watched().
    if (m.snapshot && Array.isArray(m.not_allowed)) {
      const users = m.not_allowed.filter((u) => typeof u === 'string' && this._watch.has(u));
      if (users.length) this._emit('error', { kind: 'server', code: 'not_allowed', message: `the token does not allow watching ${users.join(', ')}`, id: m.id, users });
    }
    if (!Array.isArray(m.users)) return;
    for (const u of m.users) {
      if (!u || typeof u.user_id !== 'string') continue;
      const callbacks = this._watch.get(u.user_id);
      if (!callbacks) continue; // unsubscribed meanwhile
      const prev = this._known.get(u.user_id);
      // A snapshot replaces what we knew (the server may have restarted and
      // begun its versions again); a change only if it is newer. The
      // version a watcher gets moves by one with each change it is sent (a
      // device change too), and with nothing else.
      const kind = m.snapshot ? null : (u.change || 'status');
      if (!m.snapshot && prev && typeof u.version === 'number' && typeof prev.version === 'number'
          && u.version <= prev.version) continue;
      const state = m.snapshot || !prev ? userState(u) : mergeChange(prev, u, kind);
      this._known.set(u.user_id, state);
      if (this._session && u.user_id === this._session.user_id) {
        this._ownAvailability(state.status === 'offline' ? 'invisible' : state.availability);
      }
      const change = { snapshot: !!m.snapshot, kind, from: m.snapshot ? (prev ? prev.status : null) : (u.from ?? (prev ? prev.status : null)), reason: u.reason ?? null, seq: u.seq ?? null };
      this._emit('presence', { user: copyState(state), ...change });
      for (const fn of [...callbacks]) {
        if (typeof fn !== 'function') continue; // a subscribe() without callback
        try { fn(copyState(state), change); } catch (e) { this._report(e); }
      }
    }
  }

  _sendSubscribe(ids) {
    this._sendUsers('subscribe', ids);
  }

  // Split long lists so one message stays well under the server's frame
  // limit. Sizes are UTF-8 bytes, as the server counts them: counted in
  // characters, 900 ids of 42 CJK characters (118 bytes each) made a 100 KB
  // message, closed with 1009 at every reconnect.
  _sendUsers(type, ids) {
    if (!ids.length || !this._session) return;
    const overhead = 64; // {"type":"unsubscribe","id":N,"users":[]}
    let batch = [];
    let size = overhead;
    const flush = () => {
      const id = this._nextId++;
      if (batch.length && this._send({ type, id, users: batch }) && type === 'subscribe') this._subReqs.set(id, batch);
      batch = [];
      size = overhead;
    };
    for (const id of ids) {
      const n = utf8Length(JSON.stringify(id)) + 1;
      if (batch.length && size + n > this._maxMessageBytes) flush();
      batch.push(id);
      size += n;
    }
    flush();
  }

  // presenced before per-user answers (and now when none of its users is
  // allowed) refuses a whole subscribe when the token's watch does not
  // allow one of its users, and names only that one in a message. Sent as
  // one list (every watched user at each (re)connect), a single user the
  // token does not allow left every other user unwatched. The refused list
  // is split in two and each half asked again, down to the users refused
  // alone, each reported once (error not_allowed, users: [id]). The halves
  // go at most one per 50 ms, under the server's messages-per-second limit.
  _subRefused(m) {
    const users = this._subReqs.get(m.id).filter((u) => this._watch.has(u));
    this._subReqs.delete(m.id);
    if (users.length === 1) {
      this._emit('error', { kind: 'server', code: m.code, message: m.message, id: m.id, users });
    } else if (users.length > 1) {
      const half = users.length >> 1;
      this._subQueue.push(users.slice(0, half), users.slice(half));
      this._pumpSubscribes();
    }
  }

  _pumpSubscribes() {
    if (this._subTimer !== null || !this._subQueue.length) return;
    this._subTimer = this._setTimeout(() => {
      this._subTimer = null;
      const users = (this._subQueue.shift() || []).filter((u) => this._watch.has(u));
      this._sendUsers('subscribe', users);
      this._pumpSubscribes();
    }, 50);
  }

  /**
   * Watch users. onChange(user, change) runs with each user's state from the
   * snapshot and on every change. Returns a function that undoes this call.
   */
  subscribe(userIds, onChange) {
    const given = [...new Set(Array.isArray(userIds) ? userIds : [userIds])].filter((x) => typeof x === 'string' && x.length);
    // presenced refuses a whole subscribe for one id it could never hold
    // (bad_user_id, counted towards the 1008 close), and the client sends
    // every watched id again at each reconnect: one such id would leave
    // every user unwatched for good. It is left out here and reported.
    const ids = given.filter(validId);
    if (ids.length < given.length) {
      const bad = given.filter((x) => !validId(x));
      this._emit('error', { kind: 'server', code: 'bad_user_id', message: 'not a valid user id (1..128 bytes of UTF-8, no control characters)', users: bad });
    }
    const cb = typeof onChange === 'function' ? onChange : null;
    // A call without a callback holds the users by a token of its own, so
    // that its undo releases only what it added (not other callers' callbacks).
    const entry = cb || {};
    const fresh = [];
    for (const id of ids) {
      let set = this._watch.get(id);
      if (!set) { set = new Set(); this._watch.set(id, set); fresh.push(id); }
      set.add(entry);
    }
    this._sendSubscribe(fresh);
    if (cb) {
      for (const id of ids) {
        if (fresh.includes(id)) continue;
        const u = this._known.get(id);
        // A copy as deep as get()'s (a callback changing devices or message
        // must not change what the client knows), and a change as typed.
        if (u) { try { cb(copyState(u), { snapshot: true, kind: null, from: null, reason: null, seq: null }); } catch (e) { this._report(e); } }
      }
    }
    return () => this._unwatch(ids, entry);
  }

  /**
   * Stop watching. With onChange, only that callback is removed (the user
   * stays watched while other callbacks remain); without, every callback.
   */
  unsubscribe(userIds, onChange) {
    this._unwatch(Array.isArray(userIds) ? userIds : [userIds], onChange || null);
  }

  // Remove entry (a callback, or a subscribe() call's token; null: all) for ids.
  _unwatch(ids, entry) {
    const gone = [];
    for (const id of ids) {
      const set = this._watch.get(id);
      if (!set) continue;
      if (entry) set.delete(entry); else set.clear();
      if (set.size === 0) { this._watch.delete(id); this._known.delete(id); gone.push(id); }
    }
    this._sendUsers('unsubscribe', gone);
  }

  // ------------------------------------------------ status people set

  /** This session's device kind ('web', 'mobile', 'desktop', or the app's word), from the token. */
  get device() { return this._session ? (this._session.device ?? 'web') : null; }

  /**
   * Set the user's availability: 'auto', 'dnd', 'away' or 'invisible'. Kept by
   * the server across reconnects. Resolves when the server has it; rejects
   * with an Error whose code is the server's (bad_availability, ...) or
   * 'not_connected'.
   */
  setAvailability(availability) {
    if (!AVAILABILITIES.includes(availability)) return Promise.reject(codeError('bad_availability', 'availability must be auto, dnd, away or invisible'));
    return this._request({ type: 'availability', availability }).then(() => this._ownAvailability(availability));
  }

  /**
   * The user's own availability as set ('auto', 'dnd', 'away', 'invisible'),
   * or null while unknown. Nothing in the welcome says it, and get() of our
   * own user is what watchers see: invisible shows there as offline and
   * 'auto', like a user who is gone, so a page could not tell (nor show in
   * its picker, after a reload or when another tab set it) that the user is
   * invisible. Known from this client's setAvailability(), and, when the page
   * watches its own user, from that user's state: the shown availability,
   * or 'invisible' when the user is shown offline while this session is open
   * (a connected user is shown offline only when invisible: protocol 6.1).
   */
  get availability() { return this._availability; }

  _ownAvailability(a) {
    if (a === this._availability) return;
    this._availability = a;
    this._emit('availability', { availability: a });
  }

  /**
   * Set the status message: text (at most 128 characters by default) and an
   * emoji, cleared by the server after clearAfterMs (rounded up to whole
   * seconds) or at expiresAt (ms since the epoch), or never.
   */
  setMessage(text, { emoji, clearAfterMs, expiresAt } = {}) {
    const msg = { type: 'message' };
    if (text !== undefined && text !== null) msg.text = String(text);
    if (emoji !== undefined && emoji !== null) msg.emoji = String(emoji);
    // clearAfterMs 0 is "never", as 0 turns the client's other timers off
    // (it was sent as 1 s: a "Never" menu item worth 0 cleared the message
    // a second later). Not a number (NaN from a form field, a string) was
    // sent as null, a message that never cleared; a negative one as 1 s.
    // Both are refused here, as the server refuses an expiry in the past.
    if (clearAfterMs !== undefined && clearAfterMs !== null) {
      if (typeof clearAfterMs !== 'number' || !Number.isFinite(clearAfterMs) || clearAfterMs < 0) return Promise.reject(codeError('bad_expiry', 'clearAfterMs must be a number of ms, 0 or more (0: never)'));
      if (clearAfterMs > 0) msg.expires_in = Math.ceil(clearAfterMs / 1000);
    } else if (expiresAt !== undefined && expiresAt !== null) {
      const at = Number(expiresAt); // a Date works too
      if (!Number.isFinite(at)) return Promise.reject(codeError('bad_expiry', 'expiresAt must be a time in ms since the epoch (or a Date)'));
      msg.expires_at = Math.floor(at);
    }
    return this._request(msg);
  }

  /** Clear the status message. */
  clearMessage() {
    return this._request({ type: 'message' });
  }

  _request(msg) {
    if (!this._session || this._state !== OPEN) return Promise.reject(codeError('not_connected', 'not connected'));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      if (!this._send({ ...msg, id })) {
        this._pending.delete(id);
        reject(codeError('not_connected', 'send failed'));
      }
    });
  }

  _settle(id, err) {
    const p = id === undefined ? undefined : this._pending.get(id);
    if (!p) return false;
    this._pending.delete(id);
    if (err) p.reject(codeError(err.code, err.message)); else p.resolve();
    return true;
  }

  _failPending() {
    for (const p of this._pending.values()) p.reject(codeError('not_connected', 'connection closed before the answer'));
    this._pending.clear();
  }

  // --------------------------------------------------------------- status

  /** Set this session idle (sticky: idle detection does not undo it). */
  setStatusIdle() {
    this._manualIdle = true;
    this._statusChanged();
  }

  /** Set this session online (also clears idle from idle detection). */
  setStatusOnline() {
    this._manualIdle = false;
    this._autoIdle = false;
    this._lastActivity = this._now();
    this._armIdle();
    this._statusChanged();
  }

  _statusChanged() {
    const status = this.status;
    if (status !== this._lastEmittedStatus) {
      this._lastEmittedStatus = status;
      this._emit('status', { status, auto: this.autoIdle });
    }
    this._syncStatus();
  }

  _syncStatus() {
    const want = this.status;
    if (!this._session || want === this._sentStatus) return;
    if (this._send({ type: 'status', id: this._nextId++, status: want })) this._sentStatus = want;
  }

  // --------------------------------------------------------------- pings

  _armPing() {
    if (!this._pingIntervalMs || !this._session) return;
    if (this._pingTimer !== null) this._clearTimeout(this._pingTimer);
    const quiet = this._now() - Math.max(this._lastSent, this._lastRecv);
    const wait = Math.max(0, this._pingIntervalMs - quiet);
    this._pingTimer = this._setTimeout(() => this._pingDue(), wait);
  }

  _pingDue() {
    this._pingTimer = null;
    if (!this._session) return;
    const quiet = this._now() - Math.max(this._lastSent, this._lastRecv);
    if (quiet < this._pingIntervalMs) return this._armPing();
    if (this._pongTimeoutMs) this._probe();
    else this._send({ type: 'ping', id: 'p' + this._nextId++ }); // traffic only, no deadline
  }

  // Ping now; no answer (nor any other frame) within pongTimeoutMs drops the
  // connection and reconnects. One probe at a time.
  _probe() {
    if (!this._session || !this._pongTimeoutMs || this._pongTimer !== null) return;
    const ws = this._ws;
    this._send({ type: 'ping', id: 'p' + this._nextId++ });
    this._pongTimer = this._setTimeout(() => {
      this._pongTimer = null;
      if (ws !== this._ws) return;
      // Nothing came back: the connection is dead even if the socket
      // has not noticed. Drop it and reconnect.
      this._emit('error', { kind: 'timeout', message: 'no pong from server' });
      this._drop(ws, 'pong timeout');
    }, this._pongTimeoutMs);
  }

  // ------------------------------------------------------ token refresh

  // Schedule a refresh of a token expiring at exp (Unix seconds, from the
  // welcome or the last refresh): tokenRefreshAheadMs before it, or halfway
  // there for a token with less than twice that left. The server checks the
  // new token as at connect and keeps the session: no presence event, no
  // reconnect (docs/protocol.md 1.2).
  _armRefresh(exp) {
    if (this._refreshTimer !== null) { this._clearTimeout(this._refreshTimer); this._refreshTimer = null; }
    if (!this._refreshAheadMs || typeof exp !== 'number' || !this._session) return;
    // exp is on the server's clock: a computer 5 min slow counted 5 min
    // more and refreshed after the server had closed it (4001) at expiry,
    // once per token lifetime.
    const left = exp * 1000 - (this._now() + this._clockOffset);
    if (left <= 2000) return; // too late: the 4001 close and a reconnect follow
    const wait = Math.max(1000, left > 2 * this._refreshAheadMs ? left - this._refreshAheadMs : left / 2);
    const session = this._session;
    this._refreshTimer = this._setTimeout(() => {
      this._refreshTimer = null;
      if (session !== this._session) return;
      if (wait > MAX_TIMER_MS) return this._armRefresh(exp); // the wait was cut: the rest
      this._refresh(session, exp);
    }, wait);
  }

  _clockPong(m) {
    const sent = this._clockPing.sent;
    this._clockPing = null;
    if (typeof m.ts !== 'number' || !Number.isFinite(m.ts)) return;
    const now = this._now();
    // The server read its clock about halfway through the round trip.
    const offset = Math.round(m.ts - (sent + now) / 2);
    const moved = Math.abs(offset - this._clockOffset) >= 1000;
    this._clockOffset = offset;
    // Sooner or later than planned: plan again (not while a refresh is out).
    if (moved && this._refreshTimer !== null && this._session) this._armRefresh(this._session.exp);
  }

  async _refresh(session, exp) {
    let token;
    try {
      token = await this._getToken();
    } catch (error) {
      if (session !== this._session) return;
      this._emit('error', { kind: 'token', message: 'token provider failed (refresh)', error });
      return this._armRefresh(exp); // again, halfway to the expiry
    }
    if (session !== this._session) return;
    // No token to give: the connection runs to its expiry (close 4001),
    // where the usual reconnect asks again.
    if (token == null || token === '') return;
    const id = 't' + this._nextId++;
    if (this._send({ type: 'token', token: String(token), id })) this._refreshId = id;
  }

  _refreshed(m) {
    this._refreshId = null;
    if (this._session && typeof m.exp === 'number') this._session.exp = m.exp;
    if (Array.isArray(m.unsubscribed) && m.unsubscribed.length) {
      // The new token no longer lets this session watch these users. No
      // change of theirs comes any more: what we knew would be shown as
      // current for good (online, say). They stay watched (a later token may
      // allow them again), their state unknown, as for a refused subscribe.
      for (const id of m.unsubscribed) this._known.delete(id);
      this._emit('error', { kind: 'server', code: 'not_allowed', message: 'the refreshed token does not allow watching these users', users: m.unsubscribed });
    }
    this._emit('token', { exp: m.exp });
    this._armRefresh(m.exp);
  }

  _refreshRefused(m) {
    this._refreshId = null;
    this._emit('error', { kind: 'token', code: m.code, message: m.message, id: m.id });
    // The old token stands; try once more halfway to its expiry.
    if (this._session) this._armRefresh(this._session.exp);
  }

  // ------------------------------------------------------ idle detection

  _bindDom() {
    if (this._domBound) return;
    this._domBound = true;
    const w = this._window;
    const d = this._document;
    // Idle by timeout only where activity can be seen: without a window
    // (node, or window: null) nothing would ever make the session online
    // again, so a client that never saw a key would go idle after timeoutMs.
    this._idleWatched = false;
    if (w && typeof w.addEventListener === 'function') {
      if (this._idleOpts.timeoutMs > 0) {
        for (const e of ACTIVITY_EVENTS) w.addEventListener(e, this._onActivity, { capture: true, passive: true });
        this._idleWatched = true;
      }
      w.addEventListener('online', this._onOnline);
      w.addEventListener('offline', this._onOffline);
    }
    if (d && typeof d.addEventListener === 'function' && (this._idleOpts.whenHidden || this._idleOpts.timeoutMs > 0)) {
      d.addEventListener('visibilitychange', this._onVisibility);
    }
    this._lastActivity = this._now();
    this._armIdle();
    // A page hidden from the start (a link opened in a background tab, the
    // tabs a browser restores) gets no visibilitychange until it is shown:
    // it came online and stayed so. Idle now, before the URL is built, so
    // that the session opens idle.
    if (this._idleOpts.whenHidden && d && d.hidden && !this._autoIdle) { this._autoIdle = true; this._statusChanged(); }
  }

  _unbindDom() {
    if (!this._domBound) return;
    this._domBound = false;
    const w = this._window;
    const d = this._document;
    if (w && typeof w.removeEventListener === 'function') {
      for (const e of ACTIVITY_EVENTS) w.removeEventListener(e, this._onActivity, { capture: true });
      w.removeEventListener('online', this._onOnline);
      w.removeEventListener('offline', this._onOffline);
    }
    if (d && typeof d.removeEventListener === 'function') d.removeEventListener('visibilitychange', this._onVisibility);
    if (this._idleTimer !== null) { this._clearTimeout(this._idleTimer); this._idleTimer = null; }
  }

  _armIdle() {
    if (!(this._idleOpts.timeoutMs > 0) || !this._domBound || !this._idleWatched) return;
    if (this._idleTimer !== null) this._clearTimeout(this._idleTimer);
    const wait = Math.max(0, this._lastActivity + this._idleOpts.timeoutMs - this._now());
    this._idleTimer = this._setTimeout(() => this._idleDue(), wait);
  }

  _idleDue() {
    this._idleTimer = null;
    if (this._now() - this._lastActivity >= this._idleOpts.timeoutMs) {
      if (!this._autoIdle) { this._autoIdle = true; this._statusChanged(); }
    } else {
      this._armIdle(); // activity since: wait for the rest
    }
  }

  _activity() {
    const now = this._now();
    // Cheap path for the flood of pointermove events: nothing to do while
    // online and recently handled. The idle timer is not reset per event;
    // it re-arms itself from _lastActivity when it fires.
    this._lastActivity = now;
    if (!this._autoIdle && now - this._lastActivityHandled < this._idleOpts.throttleMs) return;
    this._lastActivityHandled = now;
    if (this._document && this._document.hidden && this._idleOpts.whenHidden) return;
    if (this._autoIdle) {
      this._autoIdle = false;
      this._statusChanged();
    }
    if (this._idleTimer === null) this._armIdle();
  }

  _visibility() {
    const d = this._document;
    if (!d) return;
    if (d.hidden) {
      if (this._idleOpts.whenHidden && !this._autoIdle) { this._autoIdle = true; this._statusChanged(); }
    } else {
      this._lastActivityHandled = 0;
      this._activity();
    }
  }
}

/** Shorthand: new PresenceClient(options), connected. */
/**
 * A channel joined (or observed) through a PresenceClient: who is in it,
 * with what data, live. Made by client.channel(name, { data, observe,
 * snapshot, allMembers }); snapshot: false joins without the member list
 * (no 'sync'). A snapshot holds the server's first page (--channel-page
 * members); with more, the client reads the next pages ({"type":"members"})
 * until members() is complete, unless allMembers is false.
 * Events: 'sync' (a snapshot, then each further page: { members, count,
 * more }, more false once every page is in), 'join', 'leave',
 * 'update' (each with the member and the change), 'left' (a backend removed
 * this user), 'error' ({ code, message }).
 */
export class Channel {
  constructor(client, name, opts = {}) {
    this.client = client;
    this.name = name;
    this._data = opts.data ?? null;
    this._observe = !!opts.observe;
    // { snapshot: false }: the join is answered by an ack, no member list
    // (no 'sync'): members() holds the members seen in changes since.
    this._snapshot = opts.snapshot !== false;
    // Read the pages after a snapshot with more (docs/protocol.md 4.2).
    this._allMembers = opts.allMembers !== false;
    this._members = new Map(); // user id -> member
    this._count = 0;
    this._more = false;
    this._listeners = new Map();
    this._active = true; // not left
    this._joinId = null; // id of our last join/observe
    this._retryTimer = null;
    this._retries = 0;
    this._pageId = null; // id of the members request awaited, if any
    this._after = null; // its cursor: the last member of the page before
    this._pageTimer = null; // a page request waiting to be sent again
    this._pageRetries = 0;
    // Members whose leave came while pages are read: a page read before
    // the leave (on Redis it may come after) must not bring them back,
    // nor, once they joined again, replace them: a member's version starts
    // again at 1 at its next join, so a page's older record (version 3)
    // would outrank the new member (version 1), whose next changes would
    // then look stale. The changes tell all of them from the leave on.
    this._gone = new Set();
  }

  /** The members known (the snapshot and the pages after it, then the changes). */
  members() { return [...this._members.values()].map((m) => ({ ...m })); }
  /** The channel's member count as members are shown it (beyond the
   * snapshot's page; invisible members are not counted, ourselves included). */
  get count() { return this._count; }
  /** Whether members exist beyond those known: pages still being read (or
   * not read: allMembers false, or a page refused). */
  get more() { return this._more; }
  get data() { return this._data; }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const s = this._listeners.get(event);
    if (s) s.delete(fn);
  }

  _emit(event, detail) {
    for (const fn of [...(this._listeners.get(event) || [])]) {
      try { fn(detail); } catch (e) { this.client._report(e); }
    }
  }

  /** Replace this session's data in the channel (members see an update). */
  update(data) {
    if (this._observe) throw new Error('an observed channel has no data of ours');
    this._data = data ?? null;
    // Not joined on the server while its join waits to be sent again
    // (join_rate, store_unavailable): an update would be refused not_joined,
    // and the join carries the data.
    if (!this._active || this._retryTimer !== null) return;
    const id = this.client._nextId++;
    // Kept for its answer only when sent: while disconnected the rejoin
    // on the next welcome carries the data, and no answer would come.
    if (this.client._send({ type: 'update', id, channel: this.name, data: this._data })) this.client._chanReqs.set(id, this);
  }

  /** Leave (or stop observing); the channel object is done. */
  leave() {
    if (!this._active) return;
    this._active = false;
    this._stopRetry();
    this.client._channels.delete(this.name);
    // Its answer is this channel's, which is done: an ack, or not_joined
    // when the join never happened (refused, or waiting to be retried),
    // which is not news to a page that wanted out.
    const id = this.client._nextId++;
    if (this.client._send({ type: this._observe ? 'unobserve' : 'leave', id, channel: this.name })) this.client._chanReqs.set(id, this);
    this._forget();
  }

  // Out of the channel: no member known, so none counted (count kept the
  // last frame's, members() was empty: a page showed "2 here" and nobody).
  _forget() {
    this._members.clear();
    this._count = 0;
    this._more = false;
    this._endPaging();
  }

  _endPaging() {
    this._pageId = null;
    this._gone.clear();
    if (this._pageTimer !== null) { this.client._clearTimeout(this._pageTimer); this._pageTimer = null; }
  }

  // Ask for the page after the last member of the frame just read (the
  // server lists in user id order): members(), more and a 'sync' follow.
  _nextPage(list) {
    this._pageId = null;
    if (!this._allMembers || !this._more || !this._active) return;
    let last = null;
    for (const x of Array.isArray(list) ? list : []) if (x && typeof x.user_id === 'string') last = x.user_id;
    // A page with more and no member gives no cursor to go on from (a
    // server older than the one that never sends one): more stays true.
    if (last === null) return;
    this._after = last;
    this._askPage();
  }

  _askPage() {
    const id = this.client._nextId++;
    this._pageId = id;
    if (this.client._send({ type: 'members', id, channel: this.name, after: this._after })) this.client._chanReqs.set(id, this);
  }

  // A page: merged into what we know. A change may have come before the
  // page that holds it, or (Redis) after a page read before it: the
  // member's version says which is newer; a leave that came while pages
  // are read keeps out a page's older record of that member.
  _page(m) {
    if (m.id !== this._pageId || !this._active) return;
    this._pageRetries = 0;
    for (const x of Array.isArray(m.members) ? m.members : []) {
      if (!x || typeof x.user_id !== 'string') continue;
      if (this._gone.has(x.user_id)) continue;
      const v = typeof x.version === 'number' ? x.version : 0;
      const prev = this._members.get(x.user_id);
      const pv = prev && typeof prev.version === 'number' ? prev.version : -1;
      if (v < pv) continue;
      // The same version is the same member: what a change told us stays,
      // the page adds what changes do not carry (since).
      this._members.set(x.user_id, v === pv ? { ...x, ...prev } : { ...x });
    }
    this._more = !!m.more;
    this._emit('sync', { members: this.members(), count: this._count, more: this._more });
    if (this._more) this._nextPage(m.members); else this._endPaging();
  }

  _send() {
    if (!this._active) return;
    this._stopRetry();
    const id = this.client._nextId++;
    this._joinId = id;
    const msg = { type: this._observe ? 'observe' : 'join', id, channel: this.name };
    if (!this._observe && this._data !== null) msg.data = this._data;
    if (!this._observe && !this._snapshot) {
      msg.snapshot = false;
      // No list will replace what we knew: after a reconnect, members seen
      // on the old connection may have left meanwhile (a restarted server
      // sends no leave for them). members() starts again from this join.
      this._members.clear();
    }
    if (this.client._send(msg)) this.client._chanReqs.set(id, this);
  }

  _refused(m) {
    // A channel left (leave(), or removed) is done: a refusal of what it
    // asked before is nobody's business (join_rate would not be retried).
    if (!this._active) return;
    if (m.id === this._pageId) {
      this._pageId = null;
      // Redis unreachable: the page is asked again with backoff, as a join
      // is; anything else stops the reading (more stays true) and is told.
      if (m.code === 'store_unavailable' && this.client._session) {
        const delay = backoffDelay(this._pageRetries++, this.client._reconnect, this.client._random);
        const session = this.client._session;
        this._pageTimer = this.client._setTimeout(() => {
          this._pageTimer = null;
          if (this.client._session === session && this._active) this._askPage();
        }, delay);
        return;
      }
      this._gone.clear();
      this._emit('error', { code: m.code, message: m.message });
      return;
    }
    // A join (or observe) refused for now is sent again, not given up: at
    // most --channel-joins-per-s (10) joins a second are taken, and a client
    // in more channels (up to 32) sends them all at each (re)connect, so
    // the rest were refused join_rate and never joined; store_unavailable
    // (Redis unreachable) says "join again" (docs/protocol.md 4.5).
    if (m.id === this._joinId && this._active && RETRY_JOIN.has(m.code) && this.client._session) {
      const delay = m.code === 'join_rate' ? 1000 : backoffDelay(this._retries, this.client._reconnect, this.client._random);
      this._retries++;
      const session = this.client._session;
      this._retryTimer = this.client._setTimeout(() => {
        this._retryTimer = null;
        if (this.client._session === session) this._send();
      }, delay);
      return;
    }
    this._emit('error', { code: m.code, message: m.message });
  }

  _stopRetry() {
    if (this._retryTimer !== null) { this.client._clearTimeout(this._retryTimer); this._retryTimer = null; }
    if (this._pageTimer !== null) { this.client._clearTimeout(this._pageTimer); this._pageTimer = null; }
  }

  _server(m) {
    if (m.type === 'left') {
      this._active = false;
      this._stopRetry();
      this.client._channels.delete(this.name);
      this._forget();
      this._emit('left', { reason: m.reason ?? null });
      return;
    }
    if (m.page) return this._page(m);
    if (typeof m.count === 'number') this._count = m.count;
    if (m.snapshot) {
      this._retries = 0;
      // A snapshot replaces what we knew (after a reconnect the server may
      // have begun its versions again), pages being read included.
      this._members.clear();
      this._endPaging();
      this._pageRetries = 0;
      for (const x of Array.isArray(m.members) ? m.members : []) if (x && typeof x.user_id === 'string') this._members.set(x.user_id, { ...x });
      this._more = !!m.more;
      this._emit('sync', { members: this.members(), count: this._count, more: this._more });
      this._nextPage(m.members);
      return;
    }
    const x = m.member;
    if (!x || typeof x.user_id !== 'string') return;
    const prev = this._members.get(x.user_id);
    // Stale: a change the snapshot already holds. The version is the one
    // members are shown: a "hidden" change (our own while invisible, sent
    // to our sessions only) does not move it, so it is taken whatever it.
    if (!m.visibility && !m.hidden && prev && typeof x.version === 'number' && typeof prev.version === 'number' && x.version <= prev.version) return;
    const change = { from: m.from ?? null, reason: m.reason ?? null, seq: m.seq ?? null, count: this._count };
    if (m.event === 'leave') {
      if (this._pageId !== null || this._pageTimer !== null) this._gone.add(x.user_id);
      if (!prev && x.version === undefined) return;
      this._members.delete(x.user_id);
      this._emit('leave', { member: { ...x }, ...change });
      return;
    }
    const member = { ...(prev || {}), ...x };
    if (m.event === 'join' && !member.since) member.since = this.client._now();
    this._members.set(x.user_id, member);
    this._emit(m.event === 'join' && !prev ? 'join' : 'update', { member: { ...member }, ...change });
  }
}

/**
 * Join a channel (or, with { observe: true }, watch it without joining).
 * The same name returns the same object; data replaces ours on a second
 * call. Joined again after every reconnect.
 */
PresenceClient.prototype.channel = function channel(name, opts = {}) {
  if (typeof name !== 'string' || !name.length) throw new TypeError('channel name must be a non-empty string');
  let ch = this._channels.get(name);
  if (ch) {
    // Joining a channel observed here returned the observer: nothing was
    // joined and nothing said so. One object per name: leave() it first.
    if (ch._observe && (opts.data !== undefined || opts.observe === false)) {
      throw new Error(`channel ${name} is observed here: leave() it, then join`);
    }
    if (opts.data !== undefined) ch.update(opts.data);
    return ch;
  }
  ch = new Channel(this, name, opts);
  this._channels.set(name, ch);
  if (this._session) ch._send();
  return ch;
};

/** The channels joined or observed. */
PresenceClient.prototype.channels = function channels() {
  return [...this._channels.values()];
};

export function connect(options) {
  const c = new PresenceClient(options);
  c.connect();
  return c;
}

export default PresenceClient;
