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
  JWT_ENOMEM = -9
} jwt_err_t;

/* Short stable code for the error ("token_expired", ...) and a message. */
const char *jwt_err_code(int err);
const char *jwt_strerror(int err);

typedef struct jwt_config {
  const uint8_t *secret;
  size_t secret_len;
  const char *audience; /* expected "aud"; a token with "aud" that does not
                           name it (or any "aud" when NULL) is refused */
  int64_t leeway_s;     /* clock skew allowed for exp/nbf */
  size_t max_len;       /* longest token accepted (0: 4096) */
} jwt_config_t;

typedef struct jwt_claims {
  char *sub;            /* user id */
  int64_t exp;
  int watch_all;        /* "watch": "*" */
  char **watch;         /* "watch": [ids] */
  size_t n_watch;
  char *meta;           /* "meta" re-serialised as compact JSON, or NULL */
} jwt_claims_t;

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
