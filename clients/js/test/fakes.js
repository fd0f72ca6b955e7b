// SPDX-License-Identifier: MIT
// Test doubles: a manual clock and a scriptable WebSocket.

export class FakeClock {
  constructor(start = 1_000_000) {
    this.t = start;
    this.timers = new Map();
    this.seq = 0;
    this.setTimeout = (fn, ms) => {
      const id = ++this.seq;
      this.timers.set(id, { at: this.t + Math.max(0, ms | 0), fn, id });
      return id;
    };
    this.clearTimeout = (id) => { this.timers.delete(id); };
    this.now = () => this.t;
  }
  /** Advance time, running every timer that falls due, in order. */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const tm of this.timers.values()) if (tm.at <= end && (!next || tm.at < next.at || (tm.at === next.at && tm.id < next.id))) next = tm;
      if (!next) break;
      this.timers.delete(next.id);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
  pending() { return this.timers.size; }
}

export function makeFakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // --- driven by the test
    serverOpen(welcome = {}) {
      this.readyState = 1;
      this.onopen && this.onopen({});
      this.serverSend({ type: 'welcome', protocol: 1, session_id: 's' + sockets.indexOf(this), user_id: 'me', heartbeat_ms: 25000, timeout_ms: 60000, ...welcome });
    }
    serverSend(obj) { this.onmessage && this.onmessage({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) }); }
    serverClose(code = 1006, reason = '', wasClean = false) {
      this.readyState = 3;
      this.onclose && this.onclose({ code, reason, wasClean });
    }
    token() { return new URL(this.url).searchParams.get('token'); }
    types() { return this.sent.map((m) => m.type); }
  }
  return { FakeWebSocket, sockets };
}

export class FakeTarget {
  constructor() { this.listeners = new Map(); this.hidden = false; }
  addEventListener(t, fn) { if (!this.listeners.has(t)) this.listeners.set(t, new Set()); this.listeners.get(t).add(fn); }
  removeEventListener(t, fn) { const s = this.listeners.get(t); if (s) s.delete(fn); }
  dispatch(t) { for (const fn of [...(this.listeners.get(t) || [])]) fn({ type: t }); }
  count() { let n = 0; for (const s of this.listeners.values()) n += s.size; return n; }
}

/** Let pending promise callbacks (the async token provider) run. */
export const flush = () => new Promise((r) => setImmediate(r));
