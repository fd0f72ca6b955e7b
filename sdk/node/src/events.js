// SPDX-License-Identifier: MIT
// The event stream (GET /v1/events, Server-Sent Events) as an async iterable
// that reconnects by itself and resumes from the last event it yielded
// (Last-Event-ID), so nothing still in presenced's log is lost or repeated.
// A `gap` (events left the log before they were read, or presenced restarted)
// is yielded as its own item: re-read the users you care about, then go on.

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/** Parse SSE text: calls onEvent({id, event, data}) per complete block; returns the unparsed tail. */
export function parseSSE(buf, onEvent) {
  let end;
  while ((end = buf.search(/\r?\n\r?\n/)) >= 0) {
    const block = buf.slice(0, end);
    buf = buf.slice(end + (buf[end] === '\r' ? 4 : 2));
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
  }
  return buf;
}

export class EventStream {
  /**
   * @param {object} o
   * @param {string} o.url, o.apiKey
   * @param {number|string|null} [o.after]  resume after this seq (a saved cursor); null: new events only
   * @param {number} [o.retryMs]    first reconnect delay (500), doubling to o.maxRetryMs (15000)
   * @param {(err: Error) => void} [o.onError]  each failed connection (it is retried)
   * @param {() => void} [o.onConnect]  each established connection
   * @param {AbortSignal} [o.signal]  ends the iteration
   * @param {string|string[]} [o.types]  only these event types ('user.*', 'channel.join', ...)
   * @param {string} [o.channelPrefix]   only channel events of channels starting with it
   */
  constructor({ url, apiKey, fetch: f = globalThis.fetch, after = null, types = null, channelPrefix = null, retryMs = 500, maxRetryMs = 15000, onError = null, onConnect = null, signal = null }) {
    this.url = url.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this._fetch = f;
    const q = new URLSearchParams();
    if (types) q.set('types', Array.isArray(types) ? types.join(',') : types);
    if (channelPrefix) q.set('channel_prefix', channelPrefix);
    this._query = String(q) ? '?' + q : '';
    /** The last seq yielded: save it, and pass it as `after` to resume elsewhere. */
    this.cursor = after === null || after === undefined ? null : String(after);
    this.retryMs = retryMs;
    this.maxRetryMs = maxRetryMs;
    this.onError = onError;
    this.onConnect = onConnect;
    this._abort = new AbortController();
    if (signal) signal.addEventListener('abort', () => this.close(), { once: true });
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
      try {
        const res = await this._fetch(`${this.url}/v1/events${this._query}`, { headers, signal });
        if (!res.ok) {
          const text = await res.text();
          let code = 'http_' + res.status;
          try { code = JSON.parse(text).error.code || code; } catch (_) { /* not JSON */ }
          const err = new Error(`event stream: ${res.status} ${code}`);
          err.status = res.status; err.code = code;
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
          buf += decoder.decode(chunk, { stream: true });
          const batch = [];
          buf = parseSSE(buf, (ev) => batch.push(ev));
          for (const ev of batch) {
            const data = JSON.parse(ev.data.join('\n'));
            if (ev.event === 'gap') {
              yield { type: 'gap', gap: true, seq: null, data };
              continue;
            }
            if (ev.id !== null) this.cursor = ev.id;
            yield { type: ev.event, gap: false, seq: data.seq ?? Number(ev.id), data };
          }
        }
        // presenced ended the stream (shutdown): reconnect and resume.
      } catch (e) {
        if (signal.aborted) break;
        if (e && e.fatal) throw e;
        if (this.onError) this.onError(e);
      }
      if (signal.aborted) break;
      await sleep(delay, signal);
      delay = Math.min(delay * 2, this.maxRetryMs);
    }
  }
}
