// SPDX-License-Identifier: MIT
// A typed client of presenced's backend HTTP API (docs/api.md). Uses the
// global fetch of node 18+; every error of the daemon becomes a PresenceError
// with its stable `code`.
import { PresenceError } from './errors.js';
import { EventStream } from './events.js';

const enc = encodeURIComponent;

export class PresenceAPI {
  /**
   * @param {object} o
   * @param {string} o.url        presenced's base URL, e.g. http://127.0.0.1:7070
   * @param {string} o.apiKey     the backend API key (--api-key)
   * @param {number} [o.timeoutMs] per request (10000)
   * @param {typeof fetch} [o.fetch]
   */
  constructor({ url, apiKey, timeoutMs = 10000, fetch: f = globalThis.fetch } = {}) {
    if (!url) throw new TypeError('PresenceAPI: url is required');
    if (typeof f !== 'function') throw new TypeError('PresenceAPI: no fetch (node 18+, or pass one)');
    this.url = url.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this._fetch = f;
  }

  /** One request; resolves to the parsed JSON body, throws PresenceError. */
  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await this._fetch(this.url + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new PresenceError(0, 'network', e && e.message ? e.message : String(e), e);
    }
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { /* below */ }
    if (!res.ok) {
      const err = json && json.error;
      throw new PresenceError(res.status, (err && err.code) || 'http_' + res.status, (err && err.message) || text.slice(0, 200));
    }
    if (json === null) throw new PresenceError(res.status, 'bad_response', 'the answer is not JSON');
    return json;
  }

  /** GET /v1/users/{id} */
  getUser(userId) { return this.request('GET', `/v1/users/${enc(userId)}`); }

  /** Many users: POST /v1/users/query, split in requests of 1000 ids; in the order asked. */
  async getUsers(userIds) {
    const out = [];
    for (let i = 0; i < userIds.length; i += 1000) {
      const r = await this.request('POST', '/v1/users/query', { user_ids: userIds.slice(i, i + 1000) });
      out.push(...r.users);
    }
    return out;
  }

  /** GET /v1/users/{id}/sessions: the user's open sessions. */
  async sessions(userId) { return (await this.request('GET', `/v1/users/${enc(userId)}/sessions`)).sessions; }

  /** DELETE /v1/sessions/{id}: close the session (4003). Throws `no_session` if it is gone. */
  async kick(sessionId) { await this.request('DELETE', `/v1/sessions/${enc(sessionId)}`); }

  /** GET /healthz */
  health() { return this.request('GET', '/healthz'); }

  /** GET /v1/events as an async iterable that resumes by cursor; see EventStream. */
  events(options = {}) { return new EventStream({ url: this.url, apiKey: this.apiKey, fetch: this._fetch, ...options }); }
}
