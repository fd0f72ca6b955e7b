/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the JWT verifier (src/server/jwt.c).
 *
 * Input: byte 0 picks the configuration (audience, leeway, clock), the rest
 * is the token exactly as it would come out of ?token= after unescaping.
 * Checks, besides memory errors: the result is one of the documented codes,
 * the claims are zeroed on error and sane on success; and a token we sign
 * ourselves over the same bytes as a payload is never refused for its
 * algorithm or its signature (HS256 with our secret is what we accept).
 */
#include "server/jwt.h"

#include "presence.h"

#include <stdlib.h>
#include <string.h>

static const uint8_t SECRET[] = "fuzz-secret-0123456789abcdef";

static void check(int rc, const jwt_claims_t *c) {
  if (rc > JWT_OK || rc < JWT_ENOMEM) abort();
  if (!jwt_err_code(rc) || !jwt_strerror(rc)) abort();
  if (rc != JWT_OK) {
    if (c->sub || c->watch || c->meta || c->n_watch || c->watch_all) abort();
    return;
  }
  if (!c->sub || presence_id_check(c->sub) != 0) abort();
  if (c->watch_all && c->n_watch) abort();
  if (c->n_watch > JWT_MAX_WATCH) abort();
  for (size_t i = 0; i < c->n_watch; i++)
    if (presence_id_check(c->watch[i]) != 0) abort();
  if (c->meta && strlen(c->meta) > JWT_MAX_META) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t sel = data[0];
  data++;
  size--;
  static const int64_t nows[] = {0, 1700000000, INT64_MAX, INT64_MIN};
  jwt_config_t cfg = {
      .secret = SECRET,
      .secret_len = sizeof SECRET - 1,
      .audience = (sel & 1) ? "presence-tests" : NULL,
      .leeway_s = (sel & 2) ? 5 : ((sel & 4) ? -3 : INT64_MAX),
      .max_len = (sel & 8) ? 0 : 64,
  };
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
    char *signed_tok = jwt_sign_hs256(SECRET, sizeof SECRET - 1, claims);
    free(claims);
    if (signed_tok) {
      cfg.max_len = 1 << 20;
      memset(&c, 0, sizeof c);
      rc = jwt_verify(&cfg, signed_tok, strlen(signed_tok), now, &c);
      check(rc, &c);
      if (rc == JWT_EALG || rc == JWT_ESIGNATURE) abort();
      jwt_claims_free(&c);
      free(signed_tok);
    }
  }
  return 0;
}
