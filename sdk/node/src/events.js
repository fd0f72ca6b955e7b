// SPDX-License-Identifier: MIT
// The event stream (GET /v1/events, Server-Sent Events) as an async iterable
// that reconnects by itself and resumes from the last event it yielded
// (Last-Event-ID), so nothing still in presenced's log is lost or repeated.
// A `gap` (events left the log before they were read, or presenced restarted)
// is yielded as its own item: re-read the users you care about, then go on.

import { holdApiKey } from './auth.js';
import { PresenceError } from './errors.js';

const sleep = (ms, signal) => new Promise((resolve) => {
  const wake = () => { clearTimeout(t); resolve(); };
  const t = setTimeout(() => { signal?.removeEventListener('abort', wake); resolve(); }, ms);
  signal?.addEventListener('abort', wake, { once: true });
});

/**
 * Parse SSE text: calls onEvent({id, event, data}) per complete block with data; returns the
 * unparsed tail. A block with an id and no data (presenced sends one after events a filtered
 * stream skipped) dispatches no event, as in an EventSource, but moves the cursor: it is
 * given to onIdOnly(id) when that is passed, in its place among the events.
 */
export function parseSSE(buf, onEvent, onIdOnly = null) {
  let m;
  // The separator's own length: a block ended by \r\n\n (or \n\r\n) is 3
  // characters, and cutting 4 took the first letter of the next field ('id').
  while ((m = /\r?\n\r?\n/.exec(buf)) !== null) {
    const block = buf.slice(0, m.index);
    buf = buf.slice(m.index + m[0].length);
    const ev = { id: null, event: 'message', data: [] };
    for (const line of block.split(/\r?\n/)) {
      if (line === '' || line.startsWith(':')) continue;     // keepalive comment
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'data') ev.data.push(value);
      else if (field === 'id') ev.id = value;
      else if (field === 'event') ev.event = value;
    }
    if (ev.data.length) onEvent(ev);
    else if (ev.id && onIdOnly) onIdOnly(ev.id);
  }
  return buf;
}

export class EventStream {
  /**
   * @param {object} o
   * @param {string} o.url, o.apiKey
   * @param {number|string|null} [o.after]  resume after this seq (a saved cursor); null: new events only
   * @param {number} [o.retryMs]    first reconnect delay (500), doubling to o.maxRetryMs (15000)
   * @param {number} [o.readTimeoutMs]  a connection silent this long is dropped and made again (60000);
   *   presenced writes a keepalive every 15 s, so only a dead path is silent (a frozen host,
   *   a NAT or load balancer that forgot the connection: no FIN or RST ever comes)
   * @param {(err: Error) => void} [o.onError]  each failed connection (it is retried)
   * @param {() => void} [o.onConnect]  each established connection
   * @param {AbortSignal} [o.signal]  ends the iteration
   * @param {string|string[]} [o.types]  only these event types ('user.*', 'channel.join', ...)
   * @param {string} [o.channelPrefix]   only channel events of channels starting with it
   */
  constructor({ url, apiKey, fetch: f = globalThis.fetch, after = null, types = null, channelPrefix = null, retryMs = 500, maxRetryMs = 15000, readTimeoutMs = 60000, onError = null, onConnect = null, signal = null }) {
    this.url = url.replace(/\/+$/, '');
    holdApiKey(this, apiKey, 'EventStream');
    this._fetch = f;
    const q = new URLSearchParams();
    if (types) q.set('types', Array.isArray(types) ? types.join(',') : types);
    if (channelPrefix) q.set('channel_prefix', channelPrefix);
    this._query = String(q) ? '?' + q : '';
    /** The cursor past the last event yielded, and past the events a filter skipped after it
     *  (id-only blocks): save it, and pass it as `after` to resume elsewhere. */
    this.cursor = after === null || after === undefined ? null : String(after);
    // A NaN delay (Number() of an unset variable) is setTimeout's 1 ms: a
    // stream to a presenced that is down would retry every millisecond.
    for (const [name, v] of [['retryMs', retryMs], ['maxRetryMs', maxRetryMs]]) {
      if (typeof v !== 'number' || !(v >= 1) || v === Infinity) throw new TypeError(`EventStream: ${name} must be a number of ms >= 1, not ${String(v)}`);
    }
    this.retryMs = retryMs;
    this.maxRetryMs = maxRetryMs;
    if (typeof readTimeoutMs !== 'number' || !(readTimeoutMs > 0)) throw new TypeError('EventStream: readTimeoutMs must be a number of ms > 0');
    this.readTimeoutMs = readTimeoutMs;
    this.onError = onError;
    this.onConnect = onConnect;
    this._abort = new AbortController();
    // An 'abort' already fired is not fired again for a new listener.
    if (signal && signal.aborted) this.close();
    else if (signal) signal.addEventListener('abort', () => this.close(), { once: true });
    this.connects = 0;
  }

  /** Stop: the iteration ends after the event in hand. */
  close() { this._abort.abort(); }

  async *[Symbol.asyncIterator]() {
    const signal = this._abort.signal;
    let delay = this.retryMs;
    while (!signal.aborted) {
      const headers = { Accept: 'text/event-stream' };
      if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
      if (this.cursor !== null) headers['Last-Event-ID'] = this.cursor;
      // This connection's own abort: close(), or nothing read for readTimeoutMs.
      const conn = new AbortController();
      const onAbort = () => conn.abort(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      let silence;
      const alive = () => {
        clearTimeout(silence);
        silence = setTimeout(() => conn.abort(new Error(`event stream: nothing read for ${this.readTimeoutMs} ms (read timeout)`)), this.readTimeoutMs);
      };
      alive();
      try {
        const res = await this._fetch(`${this.url}/v1/events${this._query}`, { headers, signal: conn.signal });
        if (!res.ok) {
          const text = await res.text();
          // Not JSON (a proxy's page): its text, as the API's calls and the
          // Python and Go SDKs' streams give it (it was only "HTTP 503").
          let code = 'http_' + res.status, message = text.slice(0, 200) || `event stream: HTTP ${res.status}`;
          try { ({ code = code, message = message } = JSON.parse(text).error); } catch (_) { /* not JSON */ }
          // A PresenceError, as every other failure of the API (the README's
          // `e instanceof PresenceError && e.code === ...`) and as the Python
          // and Go SDKs' streams raise: it was a plain Error ("event stream:
          // 400 bad_request") that dropped the daemon's message.
          const err = new PresenceError(res.status, code, message);
          // A wrong key or a refused cursor does not heal by retrying.
          if (res.status === 401 || res.status === 400) throw Object.assign(err, { fatal: true });
          throw err;
        }
        this.connects++;
        if (this.onConnect) this.onConnect();
        delay = this.retryMs;
        const decoder = new TextDecoder();
        let buf = '';
        for await (const chunk of res.body) {
          alive();
          buf += decoder.decode(chunk, { stream: true });
          const batch = [];
          // An id-only block keeps its place in the batch: the cursor must not pass an
          // event of the batch before that event is yielded.
          buf = parseSSE(buf, (ev) => batch.push(ev), (id) => batch.push({ id, event: null, data: [] }));
          // The wait is timed, not the consumer: a slow `for await` body is not silence.
          if (batch.length) clearTimeout(silence);
          for (const ev of batch) {
            // Events a filtered stream skipped: the cursor moves past them, nothing is yielded
            // (without it a resume from a cursor the log had evicted got a spurious gap).
            if (!ev.data.length) {
              this.cursor = ev.id;
              continue;
            }
            const data = JSON.parse(ev.data.join('\n'));
            if (ev.event === 'gap') {
              yield { type: 'gap', gap: true, seq: null, data };
              continue;
            }
            if (ev.id !== null) this.cursor = ev.id;
            yield { type: ev.event, gap: false, seq: data.seq ?? Number(ev.id), data };
          }
          if (batch.length) alive();
        }
        // presenced ended the stream (shutdown): reconnect and resume.
      } catch (e) {
        if (signal.aborted) break;
        if (e && e.fatal) throw e;
        if (this.onError) this.onError(conn.signal.aborted && conn.signal.reason instanceof Error ? conn.signal.reason : e);
      } finally {
        clearTimeout(silence);
        signal.removeEventListener('abort', onAbort);
        conn.abort();                          // a body not read to its end is released
      }
      if (signal.aborted) break;
      await sleep(delay, signal);
      delay = Math.min(delay * 2, this.maxRetryMs);
    }
  }
}
