/* SPDX-License-Identifier: MIT */
/*
 * JWT verification (RFC 7519, JWS compact form) for HS256 tokens.
 *
 * Strict: the header must be {"alg": <the configured alg>, "typ": "JWT"
 * optional}; "none", RS256 or any other alg is refused whatever the
 * signature. The signature is compared in constant time. Claims: "sub"
 * (string, a valid presence id) and "exp" (number) are required; "nbf" and
 * "aud" are checked when present; "watch" (array of user ids, or "*") and
 * "meta" (object) are optional.
 */
#ifndef PRESENCED_JWT_H
#define PRESENCED_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "presence.h"

typedef enum {
  JWT_OK = 0,
  JWT_EMALFORMED = -1, /* not three base64url parts, bad JSON, ... */
  JWT_EALG = -2,       /* alg other than the configured one */
  JWT_ESIGNATURE = -3, /* wrong signature */
  JWT_EEXPIRED = -4,   /* exp in the past (after leeway) */
  JWT_ENOTYET = -5,    /* nbf in the future (after leeway) */
  JWT_EAUDIENCE = -6,  /* aud present and not ours */
  JWT_ECLAIMS = -7,    /* sub/exp missing or of the wrong type */
  JWT_ETOOLARGE = -8,  /* token longer than the limit */
  JWT_ENOMEM = -9,
  JWT_EISSUER = -10,  /* an issuer is configured and "iss" does not name it */
  JWT_ELIFETIME = -11 /* exp further ahead than max_lifetime_s allows */
} jwt_err_t;
/* The lowest code, for loops over every code. */
#define JWT_ERR_LAST JWT_ELIFETIME

/* Short stable code for the error ("token_expired", ...) and a message. */
const char *jwt_err_code(int err);
const char *jwt_strerror(int err);

typedef struct jwt_config {
  const uint8_t *secret;
  size_t secret_len;
  const char *audience; /* expected "aud": a token without "aud" or whose
                           "aud" does not name it is refused; NULL: any token
                           carrying an "aud" is refused */
  int64_t leeway_s;     /* clock skew allowed for exp/nbf/iat */
  size_t max_len;       /* longest token accepted (0: 4096) */
  const char *issuer;   /* expected "iss" (required when set); NULL: any */
  /* Longest validity a token may claim, in seconds: exp - iat (iat when
   * present, else now) over this (plus the leeway) is refused, so a token
   * minted to last a year cannot be used. 0: no limit. */
  int64_t max_lifetime_s;
} jwt_config_t;

/* Channel patterns of a claim ("channels", "observe"): exact names, a
 * prefix followed by one '*' at its end, or "*" alone (all). */
typedef struct jwt_patterns {
  char **p;
  uint32_t n; /* at most JWT_MAX_PATTERNS */
  int all;    /* "*" */
} jwt_patterns_t;
#define JWT_MAX_PATTERNS 64
/* Whether name matches one of the patterns. */
int jwt_patterns_match(const jwt_patterns_t *ps, const char *name);

/* A WebSocket keeps its claims for its life, so the layout is packed (no
 * padding holes, 32-bit counts): 80 bytes of every idle connection. */
typedef struct jwt_claims {
  char *sub; /* user id */
  int64_t exp;
  char **watch; /* "watch": [ids] */
  char *meta;   /* "meta" re-serialised as compact JSON, or NULL */
  /* "device": the session's device kind (docs/protocol.md section 6),
   * NULL when absent; not a valid device word (presence_device_check):
   * JWT_ECLAIMS. A pointer, not an inline array: a WebSocket keeps its
   * claims for its life and needs the device only to open its session. */
  char *device;
  jwt_patterns_t join;    /* "channels": may join (and observe) */
  jwt_patterns_t observe; /* "observe": may observe */
  uint32_t n_watch;        /* at most JWT_MAX_WATCH */
  int watch_all;           /* "watch": "*" */
} jwt_claims_t;

/* Limits (additions to the interface above, used by jwt_verify). */
#define JWT_DEFAULT_MAX_LEN 4096 /* max_len when the config says 0 */
#define JWT_MAX_WATCH 10000      /* most ids in "watch"; more: JWT_ECLAIMS */
#define JWT_MAX_META 4096 /* longest compact "meta"; longer: JWT_ECLAIMS */

/* Checks, in this order (the first failure is the answer, so a token that is
 * not signed with our secret never gets an answer about its claims):
 *   1. len > max_len: JWT_ETOOLARGE.
 *   2. structure: a NUL byte within len, not exactly three '.'-separated
 *      parts, an empty header or payload part, a part that is not strict
 *      base64url (see b64.h): JWT_EMALFORMED.
 *   3. header: not a UTF-8 JSON object, a duplicate member name, a \u0000
 *      escape: JWT_EMALFORMED; "alg" missing, not a string or not exactly
 *      "HS256": JWT_EALG; "crit" present, or "typ" present and not exactly
 *      "JWT": JWT_EMALFORMED.
 *   4. signature: not 32 bytes, or not HMAC-SHA256(secret, header.payload)
 *      (compared in constant time), or an empty secret: JWT_ESIGNATURE.
 *   5. payload: not a UTF-8 JSON object, or a duplicate member name
 *      (RFC 7519 section 4 allows rejecting them; cJSON would keep the
 *      first, other parsers the last): JWT_EMALFORMED. A \u0000 escape
 *      (a C string cannot carry it: "alice\u0000x" would become "alice"):
 *      JWT_ECLAIMS.
 *   6. claims, in this order: "exp" missing, not a number or not finite:
 *      JWT_ECLAIMS; now - leeway >= exp: JWT_EEXPIRED (RFC 7519 4.1.4: the
 *      token must not be accepted "on or after" exp, so exp == now is
 *      expired). "nbf" not a number: JWT_ECLAIMS; now + leeway < nbf:
 *      JWT_ENOTYET. "iat" not a number: JWT_ECLAIMS; now + leeway < iat (a
 *      token issued in the future): JWT_ENOTYET. With max_lifetime_s set,
 *      exp - (iat, or now without iat) > max_lifetime_s + leeway:
 *      JWT_ELIFETIME. "aud" not a string or an array of strings:
 *      JWT_ECLAIMS; absent while cfg->audience is set, or not naming it (or
 *      any "aud" when that is NULL; an empty array names nobody):
 *      JWT_EAUDIENCE. With cfg->issuer set: "iss" missing or not exactly
 *      it: JWT_EISSUER ("iss" is ignored without it). "sub" missing or
 *      not a valid presence id, "watch" not "*" or an array of at most
 *      JWT_MAX_WATCH valid ids, "meta" not an object or longer than
 *      JWT_MAX_META once compact: JWT_ECLAIMS.
 * Fractional exp/nbf are rounded towards "refuse" (exp down, nbf up); a
 * negative leeway counts as 0. *out is zeroed on entry and stays zeroed on
 * any error, so jwt_claims_free(out) is always safe. */
/* Verify token at time now_s (Unix seconds). On JWT_OK, *out holds the
 * claims; release them with jwt_claims_free. */
int jwt_verify(const jwt_config_t *cfg, const char *token, size_t len,
               int64_t now_s, jwt_claims_t *out);
void jwt_claims_free(jwt_claims_t *c);

/* Make an HS256 token (demo tokens, tests, presencectl). Returns a malloc'd
 * NUL-terminated string or NULL. claims_json is the payload object. */
char *jwt_sign_hs256(const uint8_t *secret, size_t secret_len,
                     const char *claims_json);

#endif
