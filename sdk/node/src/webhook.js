// SPDX-License-Identifier: MIT
// Webhook deliveries (docs/webhooks.md): verify the signature over the raw
// body, refuse stale timestamps and replayed requests, and drop events
// already applied (deliveries are at least once; (instance, seq) is the key).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { WebhookError } from './errors.js';

// `name` in lower case. node:http lowers every header name; a plain object
// from elsewhere (AWS Lambda's event.headers, a queued request) keeps the
// casing the sender used, and header names are case-insensitive (RFC 9110).
const header = (headers, name) => {
  if (typeof headers.get === 'function') return headers.get(name) ?? '';   // fetch Headers
  let v = headers[name];
  if (v === undefined) {
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
    if (key !== undefined) v = headers[key];
  }
  return Array.isArray(v) ? v.join(',') : (v ?? '');
};

/** The secrets of an endpoint (several during a rotation); none is a TypeError. */
function secretsOf(secret, who) {
  const secrets = (Array.isArray(secret) ? secret : [secret]).filter((s) => s !== undefined && s !== null && s !== '');
  if (!secrets.length) throw new TypeError(`${who}: secret is required`);
  return secrets;
}

/**
 * The accepted distance of Presence-Timestamp from this clock, checked where
 * it is given: a NaN (Number() of an unset environment variable) makes every
 * comparison false, and Infinity (or 'Infinity' from the environment) is
 * larger than every distance; either would accept a timestamp of any age, so
 * a captured delivery would stay valid for ever. The Python SDK refuses both
 * the same way.
 */
function tolerance(v, who) {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) {
    throw new TypeError(`${who}: toleranceMs must be a finite number of ms >= 0, not ${String(v)}`);
  }
  return n;
}

/**
 * Remembers what was delivered: the signatures seen inside the tolerance
 * window (a replayed request repeats one; a genuine retry is signed anew) and
 * the last sequence number applied per log instance (to drop the events of a
 * batch sent again). In memory: one per process. Persist `lastSeq` with your
 * own data when a restart must not re-apply a batch.
 */
export class WebhookGuard {
  constructor({ toleranceMs = 300000, maxSignatures = 100000 } = {}) {
    this.toleranceMs = tolerance(toleranceMs, 'WebhookGuard');
    this.maxSignatures = maxSignatures;
    this._seen = new Map();      // signature -> timestamp (ms), insertion ordered
    this.lastSeq = new Map();    // instance -> last seq applied
  }
  /**
   * true if this signature was seen before (then it is a replay). `signature`
   * is the verified entry of Presence-Signature (`v1=<hex>`), or all of them
   * when several verified (one per secret during a rotation): a replay
   * carrying any one of them is refused, and each is remembered. The raw
   * header is not the key: a captured delivery with `,v1=00` appended
   * (an entry that matches nothing) would be a header never seen.
   */
  seen(signature, ts, now) {
    const sigs = Array.isArray(signature) ? signature : [signature];
    for (const [s, t] of this._seen) {            // oldest first: evict the stale
      if (t >= now - this.toleranceMs && this._seen.size < this.maxSignatures) break;
      this._seen.delete(s);
    }
    if (sigs.some((s) => this._seen.has(s))) return true;
    for (const s of sigs) this._seen.set(s, ts);
    return false;
  }
  /**
   * The handler of a delivery (as verifyWebhook returned it) failed: let
   * presenced's retry bring its events again, and only them. Rewinding to
   * first_seq - 1 would also let through the events of the batch that were
   * applied before (a batch sent again after a lost answer), applying them twice.
   */
  forget(delivery) {
    if (!delivery.events.length) return;          // nothing of it was new
    const first = Math.min(...delivery.events.map((e) => e.seq));
    const last = this.lastSeq.get(delivery.instance) ?? 0;
    this.lastSeq.set(delivery.instance, Math.min(last, first - 1));
  }
  /** Events of a delivery not applied before; marks them applied. */
  fresh(delivery) {
    const last = this.lastSeq.get(delivery.instance) ?? 0;
    const events = delivery.events.filter((e) => e.seq > last);
    if (delivery.last_seq > last) this.lastSeq.set(delivery.instance, delivery.last_seq);
    return events;
  }
}

/**
 * Verify one delivery and parse it. Throws WebhookError (`status` is the HTTP
 * status to answer) when the signature is missing or wrong, the timestamp is
 * outside `toleranceMs` of this clock, the body is not a delivery, or (with a
 * guard) the exact request was seen before.
 * @returns {{instance: string, first_seq: number, last_seq: number, events: object[], gap?: object, duplicates: number}}
 */
export function verifyWebhook({ secret, headers, body, toleranceMs = 300000, now = Date.now(), guard = null }) {
  const secrets = secretsOf(secret, 'verifyWebhook');
  toleranceMs = tolerance(toleranceMs, 'verifyWebhook');
  if (typeof body === 'string') body = Buffer.from(body, 'utf8');
  if (!(body instanceof Uint8Array)) {
    throw new WebhookError('no_raw_body', 'the raw request body is needed (a parsed body cannot be verified)', 500);
  }
  const ts = String(header(headers, 'presence-timestamp'));
  const sig = String(header(headers, 'presence-signature'));
  if (!sig) throw new WebhookError('missing_signature', 'no Presence-Signature header');
  if (!/^\d{1,16}$/.test(ts)) throw new WebhookError('bad_timestamp', 'no valid Presence-Timestamp header');
  if (Math.abs(now - Number(ts)) > toleranceMs) {
    throw new WebhookError('stale', `timestamp ${ts} is more than ${toleranceMs} ms from this clock`);
  }
  const parts = sig.split(',').map((p) => Buffer.from(p.trim()));
  // The entries that verified, each once: the replay guard's key (below).
  const matched = [];
  for (const s of secrets) {
    const want = Buffer.from('v1=' + createHmac('sha256', s).update(ts + '.').update(body).digest('hex'));
    if (parts.some((got) => got.length === want.length && timingSafeEqual(got, want))) {
      const w = want.toString();
      if (!matched.includes(w)) matched.push(w);
    }
  }
  if (!matched.length) throw new WebhookError('bad_signature', 'signature does not match');
  let delivery;
  try {
    delivery = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch (_) {
    delivery = null;
  }
  if (!delivery || typeof delivery !== 'object' || !Array.isArray(delivery.events) || typeof delivery.instance !== 'string') {
    throw new WebhookError('bad_body', 'signed, but not a delivery', 400);
  }
  // Keyed on what verified, not on the raw header, which a replay can pad
  // with entries that match nothing.
  if (guard && guard.seen(matched, Number(ts), now)) {
    throw new WebhookError('replayed', 'this request was delivered before', 409);
  }
  const events = guard ? guard.fresh(delivery) : delivery.events;
  return { ...delivery, events, duplicates: delivery.events.length - events.length };
}

/**
 * presenced gives up on an answer after --webhook-timeout-ms and sends the
 * batch again, maybe while the first attempt is still being handled. The guard
 * has marked its events applied, so the retry would be answered 204 with none
 * and, if the first attempt then failed, the batch would be lost. 409 makes
 * presenced try again later, when the first attempt is done (as the Go SDK).
 */
const IN_PROGRESS = "an earlier attempt of this instance's deliveries is still being handled";
const inProgress = (handling, delivery) => handling.has(delivery.instance);

function readRaw(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > limit) { reject(new WebhookError('body_too_large', `body over ${limit} bytes`, 413)); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// The message of a refusal's JSON body, without the "code: " that
// WebhookError's message starts with (for logs): the body has the code
// beside it, and said "bad_signature: bad_signature: ..." once a receiver
// logged it, where the Python and Go SDKs answer the plain message.
function plain(e) {
  return e.message.startsWith(`${e.code}: `) ? e.message.slice(e.code.length + 2) : e.message;
}

function answer(res, status, code, message) {
  const body = JSON.stringify({ error: { code, message } });
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.end(body);
}

/**
 * Middleware for Express (and connect, and node:http with a `next`): verifies
 * the delivery, then sets `req.presence` (the delivery, with events already
 * applied removed) and calls next(); refuses with 401 (bad or stale signature),
 * 409 (replay), 400 (not a delivery). Reads the raw body itself, or takes the
 * Buffer of `express.raw()`; a body parsed by `express.json()` cannot be verified.
 * With `onDelivery(delivery, req)` it answers 204 itself once that resolves (5xx if it throws).
 */
export function webhookMiddleware({ secret, toleranceMs = 300000, guard = new WebhookGuard({ toleranceMs }), maxBody = 16 << 20, onDelivery = null } = {}) {
  // Checked now: an unset secret would otherwise answer every delivery 500,
  // and presenced retries a 500 forever.
  secretsOf(secret, 'webhookMiddleware');
  toleranceMs = tolerance(toleranceMs, 'webhookMiddleware');
  const handling = new Set();
  return async function presenceWebhook(req, res, next) {
    // presenced only POSTs. A GET (a health check, a browser) was answered
    // 401 missing_signature, where the Go and Python receivers answer 405.
    if (req.method !== 'POST') {
      res.setHeader('Allow', 'POST');
      return answer(res, 405, 'method_not_allowed', 'POST only');
    }
    try {
      const body = Buffer.isBuffer(req.body) ? req.body : req.body === undefined ? await readRaw(req, maxBody) : req.body;
      req.presence = verifyWebhook({ secret, headers: req.headers, body, toleranceMs, guard });
    } catch (e) {
      if (!(e instanceof WebhookError)) { if (next) return next(e); return answer(res, 500, 'internal', String(e)); }
      return answer(res, e.status, e.code, plain(e));
    }
    if (inProgress(handling, req.presence)) return answer(res, 409, 'in_progress', IN_PROGRESS);
    handling.add(req.presence.instance);
    if (!onDelivery) {
      if (!next) return answer(res, 500, 'internal', 'no handler');
      // Your route answers. Anything but a 2xx (a thrown error Express turns
      // into 500, a connection dropped) makes presenced send the batch again:
      // the guard must then let its events through, or the retry comes with
      // none and the batch is lost.
      const delivery = req.presence;
      res.once('close', () => {
        handling.delete(delivery.instance);
        if (guard && !(res.writableFinished && res.statusCode >= 200 && res.statusCode < 300)) guard.forget(delivery);
      });
      return next();
    }
    try {
      await onDelivery(req.presence, req);
      res.statusCode = 204;
      res.end();
    } catch (e) {
      // 5xx: presenced retries the batch; forget it as applied so the retry is not dropped.
      if (guard) guard.forget(req.presence);
      answer(res, 500, 'handler_failed', e && e.message ? e.message : String(e));
    } finally {
      handling.delete(req.presence.instance);
    }
  };
}

/**
 * Fastify plugin: `app.register(fastifyWebhook, { path: '/hook', secret, onDelivery })`.
 * Registers a POST route whose JSON body is kept raw (in its own encapsulated
 * context, so the app's other routes keep Fastify's JSON parser).
 */
export async function fastifyWebhook(app, { path = '/presence/webhook', secret, toleranceMs = 300000, guard = new WebhookGuard({ toleranceMs }), onDelivery }) {
  if (typeof onDelivery !== 'function') throw new TypeError('fastifyWebhook: onDelivery is required');
  secretsOf(secret, 'fastifyWebhook');
  toleranceMs = tolerance(toleranceMs, 'fastifyWebhook');
  app.removeAllContentTypeParsers?.();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  const handling = new Set();
  app.post(path, async (request, reply) => {
    let delivery;
    try {
      delivery = verifyWebhook({ secret, headers: request.headers, body: request.body ?? Buffer.alloc(0), toleranceMs, guard });
    } catch (e) {
      if (!(e instanceof WebhookError)) throw e;
      return reply.code(e.status).send({ error: { code: e.code, message: plain(e) } });
    }
    if (inProgress(handling, delivery)) return reply.code(409).send({ error: { code: 'in_progress', message: IN_PROGRESS } });
    handling.add(delivery.instance);
    try {
      await onDelivery(delivery, request);
    } catch (e) {
      if (guard) guard.forget(delivery);
      return reply.code(500).send({ error: { code: 'handler_failed', message: e && e.message ? e.message : String(e) } });
    } finally {
      handling.delete(delivery.instance);
    }
    return reply.code(204).send();
  });
}
