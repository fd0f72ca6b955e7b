// SPDX-License-Identifier: MIT
// A typed client of presenced's backend HTTP API (docs/api.md). Uses the
// global fetch of node 18+; every error of the daemon becomes a PresenceError
// with its stable `code`.
import { PresenceError } from './errors.js';
import { EventStream } from './events.js';
import { holdApiKey } from './auth.js';

/**
 * One id in a path. undefined, null, '' or an object would become a request
 * about "undefined" or "[object Object]", which presenced answers as an
 * offline user or a session already gone: a caller's bug that looks like data.
 */
function enc(v, what = 'id') {
  if (!((typeof v === 'string' && v !== '') || (typeof v === 'number' && Number.isFinite(v)))) {
    throw new TypeError(`PresenceAPI: ${what} must be a non-empty string, not ${v === '' ? "''" : typeof v === 'object' && v !== null ? 'an object' : String(v)}`);
  }
  // fetch resolves a path segment '.' or '..' (escaped as %2E too, by the
  // URL standard): getUser('..') asked GET /v1/ and answered 404 not_found
  // "no such endpoint", as if the route were missing. No escape reaches
  // presenced, so say so (the Python and Go SDKs, whose HTTP clients keep
  // the path as is, read such ids; getUsers posts the ids in a body).
  if (v === '.' || v === '..') {
    throw new TypeError(`PresenceAPI: ${what} '${v}' cannot be sent in a URL path (fetch resolves it as a dot segment)${what === 'userId' ? '; getUsers([...]) reads such a user' : ''}`);
  }
  return encodeURIComponent(v);
}

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
    // Checked here: each of these failed every call as a retryable 'network'
    // error instead, and fetch's message for a url with credentials repeats them.
    let u;
    try { u = new URL(String(url)); } catch (_) { u = null; }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
      throw new TypeError('PresenceAPI: url must be an absolute http(s) URL, such as http://127.0.0.1:7070');
    }
    if (u.username || u.password) throw new TypeError('PresenceAPI: url must not hold credentials (user:password@); the key goes in apiKey');
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0)) throw new TypeError(`PresenceAPI: timeoutMs must be a number of ms > 0, not ${String(timeoutMs)}`);
    this.url = String(url).replace(/\/+$/, '');
    holdApiKey(this, apiKey, 'PresenceAPI');
    this.timeoutMs = timeoutMs;
    this._fetch = f;
  }

  /** One request; resolves to the parsed JSON body, throws PresenceError. */
  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    let text;
    try {
      res = await this._fetch(this.url + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      // Inside the try: the answer can still be cut short (presenced killed,
      // a proxy) or outlast the timeout after its head came.
      text = await res.text();
    } catch (e) {
      throw new PresenceError(0, 'network', e && e.message ? e.message : String(e), e);
    }
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
  async getUser(userId) { return this.request('GET', `/v1/users/${enc(userId, 'userId')}`); }

  /** Many users: POST /v1/users/query, split in requests of 1000 ids; in the order asked. */
  async getUsers(userIds) {
    if (!Array.isArray(userIds)) throw new TypeError('PresenceAPI: getUsers takes an array of user ids');
    const out = [];
    for (let i = 0; i < userIds.length; i += 1000) {
      const r = await this.request('POST', '/v1/users/query', { user_ids: userIds.slice(i, i + 1000) });
      out.push(...r.users);
    }
    return out;
  }

  /** GET /v1/users/{id}/sessions: the user's open sessions. */
  async sessions(userId) { return (await this.request('GET', `/v1/users/${enc(userId, 'userId')}/sessions`)).sessions; }

  /** DELETE /v1/sessions/{id}: close the session (4003). Throws `no_session` if it is gone. */
  async kick(sessionId) { await this.request('DELETE', `/v1/sessions/${enc(sessionId, 'sessionId')}`); }

  // ---- channels (protocol.md section 4, api.md#channels) --------------------

  /** GET /v1/channels/{name}: `{ channel, count }`. */
  async channel(name) { return this.request('GET', `/v1/channels/${enc(name, 'channel name')}`); }

  /** One page of members: GET /v1/channels/{name}/members; `{ count, members, next }`. */
  async channelMembers(name, { limit = 100, after = null } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (after !== null && after !== undefined) q.set('after', after);
    return this.request('GET', `/v1/channels/${enc(name, 'channel name')}/members?${q}`);
  }

  /** Every member, page after page (a member present throughout is listed once). */
  async *allChannelMembers(name, { limit = 1000 } = {}) {
    let after = null;
    do {
      const page = await this.channelMembers(name, { limit, after });
      yield* page.members;
      after = page.next;
    } while (after !== null && after !== undefined);
  }

  /** Active channels under a prefix with their counts: GET /v1/channels?prefix=; `{ channels, next }`. */
  channels({ prefix = '', limit = 100, after = null } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (prefix) q.set('prefix', prefix);
    if (after !== null && after !== undefined) q.set('after', after);
    return this.request('GET', `/v1/channels?${q}`);
  }

  /** GET /v1/users/{id}/channels: the channels the user is a member of. */
  async userChannels(userId) { return (await this.request('GET', `/v1/users/${enc(userId, 'userId')}/channels`)).channels; }

  /** DELETE /v1/channels/{name}/members/{user}: every session of the user leaves (reason kicked). */
  async removeFromChannel(name, userId) { await this.request('DELETE', `/v1/channels/${enc(name, 'channel name')}/members/${enc(userId, 'userId')}`); }

  // ---- status that people set (protocol.md section 6) -------------------------

  /** PUT /v1/users/{id}/availability: 'auto' | 'dnd' | 'away' | 'invisible'. */
  async setAvailability(userId, availability) {
    return this.request('PUT', `/v1/users/${enc(userId, 'userId')}/availability`, { availability });
  }

  /** PUT /v1/users/{id}/message: `{ text, emoji, expiresInS | expiresAt (ms) }`. */
  async setMessage(userId, { text, emoji, expiresInS, expiresAt } = {}) {
    const body = { text };
    if (emoji !== undefined) body.emoji = emoji;
    if (expiresInS !== undefined) body.expires_in = expiresInS;
    if (expiresAt !== undefined) body.expires_at = expiresAt;
    return this.request('PUT', `/v1/users/${enc(userId, 'userId')}/message`, body);
  }

  /** DELETE /v1/users/{id}/message */
  async clearMessage(userId) { await this.request('DELETE', `/v1/users/${enc(userId, 'userId')}/message`); }

  // ---- backend-reported sessions (protocol.md section 5) ---------------------

  /** PUT /v1/sessions/{id}: create or renew a session with a TTL (serverless backends). */
  async putSession(sessionId, { userId, ttlMs, status, meta, device } = {}) {
    const body = { user: userId, ttl_ms: ttlMs };
    if (status !== undefined) body.status = status;
    if (meta !== undefined) body.meta = meta;
    if (device !== undefined) body.device = device;   // the device kind, 'web' when absent
    return this.request('PUT', `/v1/sessions/${enc(sessionId, 'sessionId')}`, body);
  }

  /** GET /v1/origins: the backends reporting sessions, with their states and counts. */
  async origins() { return (await this.request('GET', '/v1/origins')).origins; }

  /** GET /healthz */
  health() { return this.request('GET', '/healthz'); }

  /** GET /v1/events as an async iterable that resumes by cursor; see EventStream. */
  events(options = {}) { return new EventStream({ url: this.url, apiKey: this.apiKey, fetch: this._fetch, ...options }); }
}
