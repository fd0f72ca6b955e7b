/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the JWT verifier (src/server/jwt.c).
 *
 * Input: byte 0 picks the token policy (audience, leeway, clock, max
 * length), byte 1 the secret and the rest of the policy (issuer, longest
 * lifetime); the rest is the token exactly as it would come out of ?token=
 * after unescaping. The secrets are the ones presenced really runs with:
 * config.c refuses one under 32 bytes (CONFIG_SECRET_MIN), the docs make
 * them with openssl rand (-base64 48: 64 characters, one HMAC block;
 * -hex 64: 128, longer than a block, so HMAC hashes the key first), and
 * demo mode signs with 32 random bytes (demo.c), NULs included.
 * Checks, besides memory errors: the result is one of the documented codes,
 * the claims are zeroed on error and sane on success; a token we sign
 * ourselves over the same bytes as a payload is never refused for its
 * algorithm or its signature (HS256 with our secret is what we accept),
 * and is never accepted under any of the other secrets.
 */
#include "server/jwt.h"

#include "presence.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const uint8_t *key;
  size_t len;
} secret_t;

#define S(lit) {(const uint8_t *)(lit), sizeof(lit) - 1}
static const secret_t SECRETS[4] = {
    /* The shortest presenced accepts: 32 bytes. */
    S("fuzz-jwt-secret-32-bytes-long!!!"),
    /* openssl rand -base64 48 (docs/operations.md). */
    S("q9Zb2Xr7Qk1mVt8Hc3Lw5Np0Ys6Jd4Fa+Ge9Ru2Ti7Oh1Kx5Bv3Mz8Cn0Pl6Ws4/"),
    /* openssl rand -hex 64: over HMAC's 64-byte block. */
    S("3f9a1c7e5b2d8046e1f3a5c7b9d0e2f4a6c8b0d2e4f6a8c0b2d4e6f8a0c2b4d6"
      "e8f0a2c4b6d8e0f2a4c6b8d0e2f4a6c8b0d2e4f6a8c0b2d4e6f8a0c2b4d6e8f1"),
    /* Demo mode: 32 random bytes, NULs and high bytes among them. */
    S("\x8e\x00\x13\xfa\x7c\x00\x00\x91\xd2\x4b\xee\x05\x60\x3a\xc9\x1f"
      "\xb7\x22\x00\x84\x5d\xf0\x19\xa6\x3e\x71\xcc\x08\x9b\x44\xe5\x00"),
};

static void check(int rc, const jwt_claims_t *c) {
  if (rc > JWT_OK || rc < JWT_ERR_LAST) abort();
  if (!jwt_err_code(rc) || !jwt_strerror(rc)) abort();
  if (rc != JWT_OK) {
    if (c->sub || c->watch || c->meta || c->n_watch || c->watch_all ||
        c->device || c->join.p || c->join.n || c->observe.p || c->observe.n)
      abort();
    return;
  }
  if (!c->sub || presence_id_check(c->sub) != 0) abort();
  if (c->watch_all && c->n_watch) abort();
  if (c->n_watch > JWT_MAX_WATCH) abort();
  for (size_t i = 0; i < c->n_watch; i++)
    if (presence_id_check(c->watch[i]) != 0) abort();
  if (c->meta && strlen(c->meta) > JWT_MAX_META) abort();
  if (c->device && presence_device_check(c->device) != 0) abort();
  if (c->join.n > JWT_MAX_PATTERNS || c->observe.n > JWT_MAX_PATTERNS) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  uint8_t sel = data[0], sel2 = data[1];
  data += 2;
  size -= 2;
  static const int64_t nows[] = {0, 1700000000, INT64_MAX, INT64_MIN};
  const secret_t *sec = &SECRETS[sel2 & 3];
  jwt_config_t cfg = {
      .secret = sec->key,
      .secret_len = sec->len,
      .audience = (sel & 1) ? "presence-tests" : NULL,
      .leeway_s = (sel & 2) ? 5 : ((sel & 4) ? -3 : INT64_MAX),
      .max_len = (sel & 8) ? 0 : 64,
      .issuer = (sel2 & 4) ? "https://auth.example" : NULL,
      /* --jwt-max-lifetime-s: a day, or its largest value (3650 days). */
      .max_lifetime_s = (sel2 & 8) ? ((sel2 & 16) ? 86400 : 3650 * 86400) : 0,
  };
  if (sel & 0x80) cfg.leeway_s = 300; /* --jwt-leeway-s's largest */
  int64_t now = nows[sel >> 4 & 3];

  /* The token as the daemon passes it: NUL-terminated copy, length given. */
  char *tok = malloc(size + 1);
  if (!tok) return 0;
  memcpy(tok, data, size);
  tok[size] = '\0';
  jwt_claims_t c;
  memset(&c, 0xA5, sizeof c); /* jwt_verify must zero it */
  int rc = jwt_verify(&cfg, tok, size, now, &c);
  check(rc, &c);
  jwt_claims_free(&c);
  free(tok);

  /* The same bytes as claims, signed by us. */
  if (sel & 0x40) {
    char *claims = malloc(size + 1);
    if (!claims) return 0;
    memcpy(claims, data, size);
    claims[size] = '\0';
    char *signed_tok = jwt_sign_hs256(sec->key, sec->len, claims);
    free(claims);
    if (signed_tok) {
      cfg.max_len = 1 << 20;
      memset(&c, 0, sizeof c);
      rc = jwt_verify(&cfg, signed_tok, strlen(signed_tok), now, &c);
      check(rc, &c);
      if (rc == JWT_EALG || rc == JWT_ESIGNATURE) abort();
      jwt_claims_free(&c);
      /* Another deployment's secret: never accepted. */
      for (int k = 0; k < 4; k++) {
        if (&SECRETS[k] == sec) continue;
        cfg.secret = SECRETS[k].key;
        cfg.secret_len = SECRETS[k].len;
        memset(&c, 0, sizeof c);
        rc = jwt_verify(&cfg, signed_tok, strlen(signed_tok), now, &c);
        check(rc, &c);
        if (rc == JWT_OK) abort();
        jwt_claims_free(&c);
      }
      free(signed_tok);
    }
  }
  return 0;
}
