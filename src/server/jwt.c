/* SPDX-License-Identifier: MIT */
/*
 * JWT (RFC 7519) in JWS compact form (RFC 7515), HS256 only.
 *
 * The order of the checks and every refusal are documented in jwt.h. The
 * guiding rule: nothing from the payload is looked at before the signature
 * has been verified, and the header is only trusted for one thing, to say
 * "HS256" (the algorithm is ours, not the token's: RS256/none/HS384 are
 * refused whatever the signature).
 */
#include "server/jwt.h"

#include "presence.h"
#include "server/b64.h"
#include "server/json_keys.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

#define SHA256_LEN 32

const char *jwt_err_code(int err) {
  switch (err) {
  case JWT_OK:
    return "ok";
  case JWT_EMALFORMED:
    return "token_malformed";
  case JWT_EALG:
    return "token_alg";
  case JWT_ESIGNATURE:
    return "token_signature";
  case JWT_EEXPIRED:
    return "token_expired";
  case JWT_ENOTYET:
    return "token_not_yet_valid";
  case JWT_EAUDIENCE:
    return "token_audience";
  case JWT_ECLAIMS:
    return "token_claims";
  case JWT_ETOOLARGE:
    return "token_too_large";
  case JWT_EISSUER:
    return "token_issuer";
  case JWT_ELIFETIME:
    return "token_lifetime";
  default: /* JWT_ENOMEM and anything unknown: our fault, not the token's */
    return "internal";
  }
}

const char *jwt_strerror(int err) {
  switch (err) {
  case JWT_OK:
    return "ok";
  case JWT_EMALFORMED:
    return "token malformed";
  case JWT_EALG:
    return "token algorithm not accepted";
  case JWT_ESIGNATURE:
    return "token signature invalid";
  case JWT_EEXPIRED:
    return "token expired";
  case JWT_ENOTYET:
    return "token not yet valid";
  case JWT_EAUDIENCE:
    return "token audience not accepted";
  case JWT_ECLAIMS:
    return "token claims invalid";
  case JWT_ETOOLARGE:
    return "token too large";
  case JWT_EISSUER:
    return "token issuer not accepted";
  case JWT_ELIFETIME:
    return "token lifetime longer than the server allows";
  case JWT_ENOMEM:
    return "out of memory";
  default:
    return "internal error";
  }
}

/* ---- small helpers ----------------------------------------------------- */

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF)
 * and no NUL byte. cJSON does not check UTF-8 itself, and the protocol says
 * all JSON is UTF-8: "meta" is passed on to backends as it is. */
static int utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    size_t need;
    uint32_t cp, min;
    if (c < 0x80) {
      if (c == 0) return 0;
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      need = 2, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return 0; /* continuation byte first, 0xC0/0xC1, 0xF5.. */
    }
    if (n - i <= need) return 0; /* truncated sequence */
    for (size_t k = 1; k <= need; k++) {
      uint8_t d = s[i + k];
      if ((d & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += need + 1;
  }
  return 1;
}

/* Parse a decoded part. buf holds n bytes followed by a NUL (cJSON's
 * require_null_terminated wants to see the NUL inside the length). Returns
 * JWT_OK with *out set, or JWT_EMALFORMED / JWT_ENOMEM. Only objects are
 * accepted: both the JOSE header and the claims set are objects. */
static int parse_object(const char *buf, size_t n, cJSON **out) {
  *out = NULL;
  if (!utf8_valid((const uint8_t *)buf, n)) return JWT_EMALFORMED;
  cJSON *j = cJSON_ParseWithLengthOpts(buf, n + 1, NULL, 1);
  if (!j) /* cJSON does not tell bad JSON from no memory; say malformed */
    return JWT_EMALFORMED;
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return JWT_EMALFORMED;
  }
  /* 007, 1. or a raw control byte in a string: not JSON to other readers,
   * and the meta claim is kept as written (read_meta). */
  int dup = json_text_strict(buf, n) ? json_has_dup_keys(j) : 1;
  if (dup) {
    cJSON_Delete(j);
    return dup < 0 ? JWT_ENOMEM : JWT_EMALFORMED;
  }
  *out = j;
  return JWT_OK;
}

/* A JSON number as Unix seconds, rounded down (exp) or up (nbf) so that
 * rounding can only make us refuse earlier, and clamped to int64_t. */
static int64_t to_seconds(double d, int round_up) {
  d = round_up ? ceil(d) : floor(d);
  if (d >= 9223372036854775807.0) /* 2^63 as a double */
    return INT64_MAX;
  if (d <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)d;
}

static int64_t sat_add(int64_t a, int64_t b) { /* b >= 0 */
  return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static int64_t sat_sub(int64_t a, int64_t b) { /* b >= 0 */
  return a < INT64_MIN + b ? INT64_MIN : a - b;
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* ---- claims ------------------------------------------------------------ */

static int check_aud(const jwt_config_t *cfg, const cJSON *aud) {
  int named = 0;
  if (cJSON_IsString(aud)) {
    named = cfg->audience && strcmp(aud->valuestring, cfg->audience) == 0;
  } else if (cJSON_IsArray(aud)) {
    /* Every element must be a string, even after a match: a half-valid
     * claim is a wrong claim. */
    for (const cJSON *a = aud->child; a; a = a->next) {
      if (!cJSON_IsString(a)) return JWT_ECLAIMS;
      if (cfg->audience && strcmp(a->valuestring, cfg->audience) == 0)
        named = 1;
    }
  } else {
    return JWT_ECLAIMS;
  }
  return named ? JWT_OK : JWT_EAUDIENCE;
}

static int read_watch(const cJSON *w, jwt_claims_t *out) {
  if (cJSON_IsString(w)) {
    if (strcmp(w->valuestring, "*") != 0) return JWT_ECLAIMS;
    out->watch_all = 1;
    return JWT_OK;
  }
  if (!cJSON_IsArray(w)) return JWT_ECLAIMS;
  size_t n = 0;
  for (const cJSON *c = w->child; c; c = c->next) {
    if (!cJSON_IsString(c) || presence_id_check(c->valuestring) != 0)
      return JWT_ECLAIMS;
    if (++n > JWT_MAX_WATCH) return JWT_ECLAIMS;
  }
  if (n == 0) return JWT_OK; /* an empty list: watch == NULL, n_watch == 0 */
  out->watch = calloc(n, sizeof *out->watch);
  if (!out->watch) return JWT_ENOMEM;
  /* n_watch counts the strings actually copied, so that jwt_claims_free
   * frees exactly those if a copy fails half-way. */
  for (const cJSON *c = w->child; c; c = c->next) {
    char *id = dup_str(c->valuestring);
    if (!id) return JWT_ENOMEM;
    out->watch[out->n_watch++] = id;
  }
  return JWT_OK;
}

/* "channels" / "observe": "*" or an array of at most JWT_MAX_PATTERNS
 * patterns, each a channel name, or a prefix (possibly empty) with one '*'
 * at its end. */
static int read_patterns(const cJSON *w, jwt_patterns_t *out) {
  if (cJSON_IsString(w)) {
    if (strcmp(w->valuestring, "*") != 0) return JWT_ECLAIMS;
    out->all = 1;
    return JWT_OK;
  }
  if (!cJSON_IsArray(w)) return JWT_ECLAIMS;
  size_t n = 0;
  for (const cJSON *c = w->child; c; c = c->next) {
    if (!cJSON_IsString(c)) return JWT_ECLAIMS;
    const char *v = c->valuestring;
    size_t len = strlen(v);
    char name[PRESENCE_CHANNEL_MAX + 1];
    if (len == 0 || len > PRESENCE_CHANNEL_MAX) return JWT_ECLAIMS;
    /* A '*' only at the end; what precedes it follows the name rules. */
    const char *star = strchr(v, '*');
    if (star && star != v + len - 1) return JWT_ECLAIMS;
    memcpy(name, v, len - (star ? 1 : 0));
    name[len - (star ? 1 : 0)] = '\0';
    if (name[0] && presence_channel_check(name) != 0) return JWT_ECLAIMS;
    if (++n > JWT_MAX_PATTERNS) return JWT_ECLAIMS;
  }
  if (n == 0) return JWT_OK;
  out->p = calloc(n, sizeof *out->p);
  if (!out->p) return JWT_ENOMEM;
  for (const cJSON *c = w->child; c; c = c->next) {
    char *x = dup_str(c->valuestring);
    if (!x) return JWT_ENOMEM;
    out->p[out->n++] = x;
  }
  return JWT_OK;
}

int jwt_patterns_match(const jwt_patterns_t *ps, const char *name) {
  if (ps->all) return 1;
  for (size_t i = 0; i < ps->n; i++) {
    const char *p = ps->p[i];
    size_t len = strlen(p);
    if (len && p[len - 1] == '*') {
      if (strncmp(name, p, len - 1) == 0) return 1;
    } else if (strcmp(name, p) == 0) {
      return 1;
    }
  }
  return 0;
}

static void patterns_free(jwt_patterns_t *ps) {
  for (size_t i = 0; i < ps->n; i++)
    free(ps->p[i]);
  free(ps->p);
}

/* The meta claim as the token's signer wrote it (compact): printing cJSON's
 * tree again would change a number that a double does not hold (an id of
 * 19 digits). text[0..len): the claims set p was parsed from. Plain malloc
 * memory, as jwt_claims_free frees it. */
static int read_meta(const char *text, size_t len, const cJSON *p,
                     const cJSON *m, jwt_claims_t *out) {
  if (!cJSON_IsObject(m)) return JWT_ECLAIMS;
  size_t n = 0;
  char *s = json_source_compact(text, len, p, m, &n);
  if (!s) return JWT_ENOMEM;
  if (n > JWT_MAX_META) {
    free(s);
    return JWT_ECLAIMS;
  }
  out->meta = s;
  return JWT_OK;
}

/* A numeric date claim as Unix seconds (rounded towards "refuse" per
 * round_up); JWT_ECLAIMS if present and not a finite number, *present 0 if
 * absent. */
static int read_date(const cJSON *p, const char *name, int round_up,
                     int64_t *out, int *present) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, name);
  *present = v != NULL;
  if (!v) return JWT_OK;
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return JWT_ECLAIMS;
  *out = to_seconds(v->valuedouble, round_up);
  return JWT_OK;
}

/* exp (required), nbf and iat (optional), and the lifetime limit. */
static int check_times(const jwt_config_t *cfg, const cJSON *p, int64_t now,
                       jwt_claims_t *out) {
  int64_t leeway = cfg->leeway_s > 0 ? cfg->leeway_s : 0;
  int present;
  int rc = read_date(p, "exp", 0, &out->exp, &present);
  if (rc != JWT_OK || !present) return JWT_ECLAIMS;
  /* RFC 7519 4.1.4: not accepted "on or after" exp, hence >=. */
  if (sat_sub(now, leeway) >= out->exp) return JWT_EEXPIRED;

  int64_t nbf = 0;
  rc = read_date(p, "nbf", 1, &nbf, &present);
  if (rc != JWT_OK) return rc;
  /* RFC 7519 4.1.5: accepted "on or after" nbf, hence <. */
  if (present && sat_add(now, leeway) < nbf) return JWT_ENOTYET;

  /* A token issued in the future comes from an issuer whose clock is off,
   * or was minted ahead of time to outlive a lifetime check: refused like
   * an nbf in the future. */
  int64_t iat = 0;
  int has_iat;
  rc = read_date(p, "iat", 1, &iat, &has_iat);
  if (rc != JWT_OK) return rc;
  if (has_iat && sat_add(now, leeway) < iat) return JWT_ENOTYET;

  if (cfg->max_lifetime_s > 0) {
    int64_t from = has_iat ? iat : now;
    int64_t limit = sat_add(sat_add(from, cfg->max_lifetime_s), leeway);
    if (out->exp > limit) return JWT_ELIFETIME;
  }
  return JWT_OK;
}

/* aud: required when an audience is configured, refused when none is. */
static int check_audience(const jwt_config_t *cfg, const cJSON *p) {
  const cJSON *aud = cJSON_GetObjectItemCaseSensitive(p, "aud");
  if (!aud) return cfg->audience ? JWT_EAUDIENCE : JWT_OK;
  return check_aud(cfg, aud);
}

/* iss: exactly the configured issuer when there is one. */
static int check_issuer(const jwt_config_t *cfg, const cJSON *p) {
  if (!cfg->issuer) return JWT_OK;
  const cJSON *iss = cJSON_GetObjectItemCaseSensitive(p, "iss");
  if (!cJSON_IsString(iss) || strcmp(iss->valuestring, cfg->issuer) != 0)
    return JWT_EISSUER;
  return JWT_OK;
}

/* sub, watch and meta: what the session is made of. */
static int read_identity(const char *text, size_t len, const cJSON *p,
                         jwt_claims_t *out) {
  const cJSON *sub = cJSON_GetObjectItemCaseSensitive(p, "sub");
  if (!cJSON_IsString(sub) || presence_id_check(sub->valuestring) != 0)
    return JWT_ECLAIMS;
  out->sub = dup_str(sub->valuestring);
  if (!out->sub) return JWT_ENOMEM;

  const cJSON *device = cJSON_GetObjectItemCaseSensitive(p, "device");
  if (device) {
    if (!cJSON_IsString(device) || presence_device_check(device->valuestring))
      return JWT_ECLAIMS;
    out->device = dup_str(device->valuestring);
    if (!out->device) return JWT_ENOMEM;
  }

  const cJSON *watch = cJSON_GetObjectItemCaseSensitive(p, "watch");
  if (watch) {
    int rc = read_watch(watch, out);
    if (rc != JWT_OK) return rc;
  }

  const cJSON *chans = cJSON_GetObjectItemCaseSensitive(p, "channels");
  if (chans) {
    int rc = read_patterns(chans, &out->join);
    if (rc != JWT_OK) return rc;
  }
  const cJSON *obs = cJSON_GetObjectItemCaseSensitive(p, "observe");
  if (obs) {
    int rc = read_patterns(obs, &out->observe);
    if (rc != JWT_OK) return rc;
  }

  const cJSON *meta = cJSON_GetObjectItemCaseSensitive(p, "meta");
  if (meta) return read_meta(text, len, p, meta, out);
  return JWT_OK;
}

/* p parsed from text[0..len). */
static int check_claims(const jwt_config_t *cfg, const char *text, size_t len,
                        const cJSON *p, int64_t now, jwt_claims_t *out) {
  int rc = check_times(cfg, p, now, out);
  if (rc == JWT_OK) rc = check_audience(cfg, p);
  if (rc == JWT_OK) rc = check_issuer(cfg, p);
  if (rc == JWT_OK) rc = read_identity(text, len, p, out);
  return rc;
}

/* ---- header ------------------------------------------------------------ */

static int check_header(const cJSON *h) {
  /* Case-sensitive lookups: cJSON_GetObjectItem would take "ALG" for
   * "alg", which no other JOSE implementation does. */
  const cJSON *alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
  if (!cJSON_IsString(alg) || strcmp(alg->valuestring, "HS256") != 0)
    return JWT_EALG;
  /* RFC 7515 4.1.11: a recipient that does not understand every extension
   * listed in "crit" must refuse the token; we understand none. */
  if (cJSON_GetObjectItemCaseSensitive(h, "crit")) return JWT_EMALFORMED;
  const cJSON *typ = cJSON_GetObjectItemCaseSensitive(h, "typ");
  if (typ && (!cJSON_IsString(typ) || strcmp(typ->valuestring, "JWT") != 0))
    return JWT_EMALFORMED;
  return JWT_OK;
}

/* ---- verify ------------------------------------------------------------ */

void jwt_claims_free(jwt_claims_t *c) {
  if (!c) return;
  free(c->sub);
  for (size_t i = 0; i < c->n_watch; i++)
    free(c->watch[i]);
  free(c->watch);
  free(c->meta);
  free(c->device);
  patterns_free(&c->join);
  patterns_free(&c->observe);
  memset(c, 0, sizeof *c);
}

/* The three parts of a compact token, located and then decoded. */
typedef struct parts {
  size_t h_len, p_len, s_len; /* encoded lengths */
  const char *h, *p, *s;      /* encoded starts */
  size_t signed_len;          /* "header.payload" */
  uint8_t *buf;               /* one buffer for the three decoded parts */
  size_t buf_len;
  uint8_t *hdr, *pay, *sig;
  size_t hd_len, pd_len, sd_len;
} parts_t;

/* Step 2: no NUL (the caller's length and strlen would disagree about what
 * was verified), exactly two dots, non-empty header and payload. */
static int split_parts(const char *token, size_t len, parts_t *pt) {
  if (memchr(token, '\0', len)) return JWT_EMALFORMED;
  const char *dot1 = memchr(token, '.', len);
  if (!dot1) return JWT_EMALFORMED;
  const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
  if (!dot2) return JWT_EMALFORMED;
  const char *end = token + len;
  if (memchr(dot2 + 1, '.', (size_t)(end - (dot2 + 1)))) return JWT_EMALFORMED;
  pt->h = token;
  pt->p = dot1 + 1;
  pt->s = dot2 + 1;
  pt->h_len = (size_t)(dot1 - token);
  pt->p_len = (size_t)(dot2 - pt->p);
  pt->s_len = (size_t)(end - pt->s);
  pt->signed_len = (size_t)(dot2 - token);
  /* An empty signature part is structurally fine ("alg":"none" tokens end
   * with a dot); it fails later, as token_alg or token_signature. */
  if (pt->h_len == 0 || pt->p_len == 0) return JWT_EMALFORMED;
  return JWT_OK;
}

/* Strict base64url of each part into one buffer, header and payload each
 * followed by a NUL for cJSON. Decoded sizes are below encoded ones. */
static int decode_parts(parts_t *pt) {
  size_t hd_max = b64url_decoded_len(pt->h_len);
  size_t pd_max = b64url_decoded_len(pt->p_len);
  size_t sd_max = b64url_decoded_len(pt->s_len);
  pt->buf_len = hd_max + 1 + pd_max + 1 + sd_max + 1;
  pt->buf = malloc(pt->buf_len);
  if (!pt->buf) return JWT_ENOMEM;
  pt->hdr = pt->buf;
  pt->pay = pt->hdr + hd_max + 1;
  pt->sig = pt->pay + pd_max + 1;
  if (b64url_decode(pt->h, pt->h_len, pt->hdr, &pt->hd_len) != 0 ||
      b64url_decode(pt->p, pt->p_len, pt->pay, &pt->pd_len) != 0 ||
      b64url_decode(pt->s, pt->s_len, pt->sig, &pt->sd_len) != 0)
    return JWT_EMALFORMED;
  pt->hdr[pt->hd_len] = '\0';
  pt->pay[pt->pd_len] = '\0';
  return JWT_OK;
}

/* Step 3: the header, trusted for one thing only, to say "HS256". */
static int verify_header(const parts_t *pt) {
  cJSON *header = NULL;
  int rc = parse_object((const char *)pt->hdr, pt->hd_len, &header);
  if (rc != JWT_OK) return rc;
  if (json_has_escaped_nul(pt->hdr, pt->hd_len))
    rc = JWT_EMALFORMED; /* "HS256\u0000x" would read as "HS256" */
  else
    rc = check_header(header);
  cJSON_Delete(header);
  return rc;
}

/*
 * HMAC-SHA256 with the key schedule kept: a server checks every token
 * against the same secret, and HMAC() fetches the algorithm and hashes the
 * key's inner and outer pads on every call (about ten allocations each).
 * The context keyed last is kept per thread with a copy of its key;
 * EVP_MAC_init with no key restarts it from the hashed pads. 0, or -1.
 */
static int hmac_sha256(const uint8_t *key, size_t klen, const void *data,
                       size_t n, unsigned char out[SHA256_LEN]) {
  static _Thread_local struct {
    EVP_MAC_CTX *ctx;
    uint8_t *key;
    size_t klen;
  } k;
  size_t outl = 0;
  if (!k.ctx || k.klen != klen || CRYPTO_memcmp(k.key, key, klen) != 0) {
    EVP_MAC_CTX_free(k.ctx);
    OPENSSL_clear_free(k.key, k.klen);
    k.ctx = NULL;
    k.key = NULL;
    k.klen = 0;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context holds its own reference */
    uint8_t *copy = ctx ? OPENSSL_malloc(klen ? klen : 1) : NULL;
    OSSL_PARAM ps[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                       OSSL_PARAM_construct_end()};
    if (!copy || !EVP_MAC_init(ctx, key, klen, ps)) {
      OPENSSL_free(copy);
      EVP_MAC_CTX_free(ctx);
      return -1;
    }
    memcpy(copy, key, klen);
    k.ctx = ctx;
    k.key = copy;
    k.klen = klen;
  } else if (!EVP_MAC_init(k.ctx, NULL, 0, NULL)) {
    return -1;
  }
  if (!EVP_MAC_update(k.ctx, data, n) ||
      !EVP_MAC_final(k.ctx, out, &outl, SHA256_LEN) || outl != SHA256_LEN)
    return -1;
  return 0;
}

/* Step 4: HMAC-SHA256 over the ASCII of "header.payload", exactly as
 * received (RFC 7515 5.2): never over a re-encoding. An empty secret would
 * make anyone a signer: fail closed. */
static int verify_signature(const jwt_config_t *cfg, const char *token,
                            const parts_t *pt) {
  if (pt->sd_len != SHA256_LEN || !cfg->secret || cfg->secret_len == 0 ||
      cfg->secret_len > INT32_MAX)
    return JWT_ESIGNATURE;
  unsigned char mac[SHA256_LEN];
  if (hmac_sha256(cfg->secret, cfg->secret_len, token, pt->signed_len, mac) !=
      0)
    return JWT_ENOMEM;
  /* Constant time: a memcmp that stops at the first difference tells an
   * attacker, byte by byte, how much of a forged signature is right. */
  return CRYPTO_memcmp(mac, pt->sig, SHA256_LEN) == 0 ? JWT_OK
                                                      : JWT_ESIGNATURE;
}

/* Steps 5 and 6: from here on the token is ours. */
static int verify_payload(const jwt_config_t *cfg, const parts_t *pt,
                          int64_t now_s, jwt_claims_t *out) {
  cJSON *payload = NULL;
  int rc = parse_object((const char *)pt->pay, pt->pd_len, &payload);
  if (rc != JWT_OK) return rc;
  if (json_has_escaped_nul(pt->pay, pt->pd_len))
    rc = JWT_ECLAIMS;
  else
    rc = check_claims(cfg, (const char *)pt->pay, pt->pd_len, payload, now_s,
                      out);
  cJSON_Delete(payload);
  return rc;
}

int jwt_verify(const jwt_config_t *cfg, const char *token, size_t len,
               int64_t now_s, jwt_claims_t *out) {
  if (!out) return JWT_ENOMEM; /* a caller bug: "internal" */
  memset(out, 0, sizeof *out);
  if (!cfg) return JWT_ENOMEM;

  /* 1. Length, before anything is read or allocated. */
  size_t max_len = cfg->max_len ? cfg->max_len : JWT_DEFAULT_MAX_LEN;
  if (len > max_len) return JWT_ETOOLARGE;
  if (!token || len == 0) return JWT_EMALFORMED;

  parts_t pt;
  memset(&pt, 0, sizeof pt);
  int rc = split_parts(token, len, &pt);
  if (rc == JWT_OK) rc = decode_parts(&pt);
  if (rc == JWT_OK) rc = verify_header(&pt);
  if (rc == JWT_OK) rc = verify_signature(cfg, token, &pt);
  if (rc == JWT_OK) rc = verify_payload(cfg, &pt, now_s, out);

  if (rc != JWT_OK) jwt_claims_free(out);
  if (pt.buf) {
    /* The decoded signature is not secret, but the buffer held the header
     * and payload too: clear it anyway, it costs nothing at this size. */
    OPENSSL_cleanse(pt.buf, pt.buf_len);
    free(pt.buf);
  }
  return rc;
}

/* ---- sign -------------------------------------------------------------- */

char *jwt_sign_hs256(const uint8_t *secret, size_t secret_len,
                     const char *claims_json) {
  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  if (!secret || secret_len == 0 || secret_len > INT32_MAX || !claims_json)
    return NULL;
  /* The payload is used byte for byte (so callers control it exactly), but
   * it must be what jwt_verify would accept as a claims set container. */
  size_t c_len = strlen(claims_json);
  cJSON *j = NULL;
  if (parse_object(claims_json, c_len, &j) != JWT_OK) return NULL;
  cJSON_Delete(j);

  size_t h_enc = b64url_encoded_len(sizeof header - 1);
  size_t p_enc = b64url_encoded_len(c_len);
  size_t s_enc = b64url_encoded_len(SHA256_LEN);
  if (c_len > SIZE_MAX / 2) return NULL;
  char *tok = malloc(h_enc + 1 + p_enc + 1 + s_enc + 1);
  if (!tok) return NULL;
  size_t o = b64url_encode((const uint8_t *)header, sizeof header - 1, tok);
  tok[o++] = '.';
  o += b64url_encode((const uint8_t *)claims_json, c_len, tok + o);
  unsigned char mac[SHA256_LEN];
  if (hmac_sha256(secret, secret_len, tok, o, mac) != 0) {
    free(tok);
    return NULL;
  }
  tok[o++] = '.';
  b64url_encode(mac, SHA256_LEN, tok + o);
  return tok;
}
