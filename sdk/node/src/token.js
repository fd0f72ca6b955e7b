// SPDX-License-Identifier: MIT
// Client tokens: the HS256 JWTs presenced checks on /v1/ws (docs/protocol.md
// section 1.1, src/server/jwt.c). Minted here so that a backend needs no JWT
// library: HS256 is one HMAC over two base64url JSON parts.
import { createHmac } from 'node:crypto';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// 1e11 s is the year 5138; 1e11 ms was 1973. A time past it was given in ms
// (Date.now()), which would make a token valid for ~50,000 years.
const MAX_SECONDS = 1e11;
function seconds(v, name) {
  if (Math.abs(v) >= MAX_SECONDS) throw new TypeError(`mintToken: ${name} is Unix seconds; ${v} looks like milliseconds (divide by 1000)`);
  return Math.floor(v);
}

/**
 * Mint a client token.
 * @param {object} o
 * @param {string|Buffer} o.secret   the secret given to presenced (--jwt-secret)
 * @param {string} o.userId          `sub`
 * @param {number} [o.ttlSeconds]    lifetime; `exp` = now + ttl (default 3600)
 * @param {number} [o.expiresAt]     or an absolute `exp`, Unix seconds
 * @param {string[]|'*'} [o.watch]   users the session may subscribe to
 * @param {object} [o.meta]          stored with the session, shown to backends
 * @param {string|string[]} [o.audience] `aud` (required by a presenced with --jwt-audience; refused by one without)
 * @param {string} [o.issuer]        `iss` (must equal --jwt-issuer when the server has one)
 * @param {number} [o.notBefore]     `nbf`, Unix seconds
 * @param {string} [o.device]        the session's device kind ('web', 'mobile', 'desktop', or a word)
 * @param {string[]|'*'} [o.channels] channel patterns the session may join (and observe)
 * @param {string[]|'*'} [o.observe]  extra channel patterns it may only observe
 * @param {object} [o.claims]        further claims (e.g. grants of later protocol
 *                                   versions), merged last
 * @param {() => number} [o.now]     clock in ms (tests)
 */
export function mintToken(o) {
  if (!o || o.secret === undefined || o.secret === null || o.secret === '') throw new TypeError('mintToken: secret is required');
  if (typeof o.userId !== 'string' || o.userId === '') throw new TypeError('mintToken: userId must be a non-empty string');
  const nowS = Math.floor((o.now ? o.now() : Date.now()) / 1000);
  const ttl = o.ttlSeconds ?? 3600;
  // At least a second: 0 (meant as "no expiry", or an unset setting) or a
  // negative lifetime minted a token dead on arrival (presenced's leeway let
  // it connect for 5 s, then closed it 4001), where the Go SDK takes 0 for its
  // default hour; the three refuse it now. A token expired on purpose: expiresAt.
  if (o.expiresAt === undefined && (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 1)) {
    throw new TypeError(`mintToken: ttlSeconds must be a number of seconds >= 1, not ${JSON.stringify(ttl)}`);
  }
  // Whole seconds, as the Python and Go SDKs mint: a ttlSeconds of 1.5 (or
  // ms / 1000) gave a fractional exp, which presenced rounds down but a
  // reader of exp as an integer refuses (Go's json into an int64 field).
  const exp = o.expiresAt !== undefined ? seconds(o.expiresAt, 'expiresAt') : Math.floor(nowS + ttl);
  if (!Number.isFinite(exp)) throw new TypeError('mintToken: expiry is not a number');
  const claims = { sub: o.userId, exp, iat: nowS };
  if (o.watch !== undefined) {
    if (o.watch !== '*' && !(Array.isArray(o.watch) && o.watch.every((w) => typeof w === 'string'))) {
      throw new TypeError("mintToken: watch must be '*' or an array of user ids");
    }
    claims.watch = o.watch;
  }
  if (o.meta !== undefined) {
    if (o.meta === null || typeof o.meta !== 'object' || Array.isArray(o.meta)) throw new TypeError('mintToken: meta must be an object');
    claims.meta = o.meta;
  }
  if (o.audience !== undefined) claims.aud = o.audience;
  if (o.issuer !== undefined) claims.iss = o.issuer;
  for (const k of ['channels', 'observe']) {
    if (o[k] === undefined) continue;
    if (o[k] !== '*' && !(Array.isArray(o[k]) && o[k].every((p) => typeof p === 'string'))) {
      throw new TypeError(`mintToken: ${k} must be '*' or an array of channel patterns`);
    }
    claims[k] = o[k];
  }
  if (o.device !== undefined) claims.device = o.device;
  if (o.notBefore !== undefined) claims.nbf = seconds(o.notBefore, 'notBefore');
  Object.assign(claims, o.claims || {});
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', o.secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}
